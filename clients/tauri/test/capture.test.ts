/**
 * `capture()` batching in the webview: fake timers for the webview's timers only; the sidecar,
 * the shell plugin's JS side and the capture server are real.
 */

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { TelemetryCapture, type DropReason, type PostHogEvent } from "../src/index.js";
import { nextEvent, realSleep, startHarness, type Harness } from "./support/harness.js";

let h: Harness | undefined;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
});

afterEach(async () => {
  vi.useRealTimers();
  await h?.dispose();
  h = undefined;
  setVisibility("visible");
});

function batchWrites(harness: Harness): number {
  return harness.shell.stdinWrites.filter((line) => line.includes('"ph_send_batch"')).length;
}

function setVisibility(state: DocumentVisibilityState): void {
  Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
}

/** Let the IPC promises and the real pipes move (real time), with webview timers frozen. */
async function settle(ms = 150): Promise<void> {
  await realSleep(ms);
}

describe("capture() batching", () => {
  it("sends one ph_send_batch when flushAt events are queued", async () => {
    // Proves the count trigger: 4 events wait, the 5th sends all 5 in one call.
    h = await startHarness();
    const client = h.client({ capture: { distinctId: "user-1", flushAt: 5, flushIntervalMs: 60_000 } });
    await client.start();
    for (let i = 0; i < 4; i++) client.capture("clicked", { n: i });
    await settle();
    expect(batchWrites(h)).toBe(0);
    expect(client.captureQueue.pending).toBe(4);

    client.capture("clicked", { n: 4 });
    const events = await h.server.waitForEvents(5);
    expect(batchWrites(h)).toBe(1);
    expect(events.map((e) => e.properties.n)).toEqual([0, 1, 2, 3, 4]);
    expect(new Set(events.map((e) => e.distinct_id))).toEqual(new Set(["user-1"]));
    expect(new Set(events.map((e) => e.uuid)).size).toBe(5);
    await vi.waitFor(() => expect(client.captureQueue.pending).toBe(0));
  });

  it("sends what is queued flushIntervalMs after the first event", async () => {
    // Proves the interval trigger with fake webview timers: nothing at 999 ms, a batch at 1000 ms.
    h = await startHarness();
    const client = h.client({ capture: { distinctId: "user-1", flushAt: 100, flushIntervalMs: 1000 } });
    await client.start();
    client.capture("a");
    client.capture("b", { x: 1 });
    await vi.advanceTimersByTimeAsync(999);
    await settle();
    expect(batchWrites(h)).toBe(0);

    await vi.advanceTimersByTimeAsync(1);
    const events = await h.server.waitForEvents(2);
    expect(events.map((e) => e.event)).toEqual(["a", "b"]);
    expect(events[1]?.properties).toMatchObject({ x: 1 });
    expect(batchWrites(h)).toBe(1);
  });

  it("sends at once when the page becomes hidden or is hidden away (pagehide)", async () => {
    // Proves the page-hide triggers: visibilitychange to hidden, then pagehide.
    h = await startHarness();
    const client = h.client({ capture: { distinctId: "user-1", flushAt: 100, flushIntervalMs: 60_000 } });
    await client.start();
    client.capture("before hide 1");
    client.capture("before hide 2");
    setVisibility("hidden");
    document.dispatchEvent(new Event("visibilitychange"));
    await h.server.waitForEvents(2);

    setVisibility("visible");
    client.capture("before unload");
    window.dispatchEvent(new Event("pagehide"));
    const events = await h.server.waitForEvents(3);
    expect(events.map((e) => e.event)).toEqual(["before hide 1", "before hide 2", "before unload"]);
    expect(batchWrites(h)).toBe(2);
  });

  it("uses an anonymous id until identify(), then links it with $identify", async () => {
    // Proves distinct_id handling: anonymous id, $identify with $anon_distinct_id and $set.
    h = await startHarness();
    const client = h.client({ capture: { flushAt: 100 } });
    await client.start();
    const anonymous = client.captureQueue.distinctId;
    client.capture("before login");
    client.identify("user-42", { plan: "pro" });
    client.capture("after login");
    await client.captureQueue.flush();
    const events = await h.server.waitForEvents(3);
    expect(events.map((e) => [e.event, e.distinct_id])).toEqual([
      ["before login", anonymous],
      ["$identify", "user-42"],
      ["after login", "user-42"],
    ]);
    expect(events[1]?.properties).toMatchObject({ $anon_distinct_id: anonymous, $set: { plan: "pro" } });
  });

  it("reports events the sidecar rejects through onDrop and sends the rest", async () => {
    // Proves per-event validation failures are not retried forever nor silent.
    h = await startHarness();
    const dropped: Array<{ events: PostHogEvent[]; reason: DropReason }> = [];
    const client = h.client({
      capture: { distinctId: "user-1", flushAt: 100, onDrop: (events, reason) => dropped.push({ events, reason }) },
    });
    await client.start();
    client.capture("ok");
    client.capture(""); // an empty event name is invalid
    const result = await client.captureQueue.flush();
    expect(result).toEqual({ accepted: 1, pending: 0 });
    expect(dropped).toHaveLength(1);
    expect(dropped[0]?.reason).toMatchObject({ kind: "rejected", error: expect.stringContaining("event") });
    expect(dropped[0]?.events[0]?.event).toBe("");
    await h.server.waitForEvents(1);
  });
});

describe("capture() across a sidecar restart", () => {
  it("keeps events captured while the sidecar restarts and delivers them afterwards", async () => {
    // Proves no loss: sends fail fast during the restart, events wait, then go out once respawned.
    h = await startHarness();
    const client = h.client({
      restart: { initialDelayMs: 500 },
      capture: { distinctId: "user-1", flushAt: 3, flushIntervalMs: 1000, retryDelayMs: 5000 },
    });
    await client.start();

    const restart = nextEvent(client, "restart");
    h.shell.crash(client.pid as number);
    await restart;
    client.capture("during restart 1");
    client.capture("during restart 2");
    client.capture("during restart 3"); // reaches flushAt: the send fails, the events stay
    await settle();
    expect(client.captureQueue.pending).toBe(3);
    expect(h.server.events).toHaveLength(0);

    const spawned = nextEvent(client, "spawn");
    await vi.advanceTimersByTimeAsync(500);
    await spawned;
    const events = await h.server.waitForEvents(3);
    expect(events.map((e) => e.event)).toEqual(["during restart 1", "during restart 2", "during restart 3"]);
    await vi.waitFor(() => expect(client.captureQueue.pending).toBe(0));
  });

  it("sends a batch again when the sidecar dies before answering it, without losing events", async () => {
    // Proves an in-flight batch whose answer is lost (paused, then SIGKILL) is retried after restart.
    h = await startHarness();
    const client = h.client({
      restart: { initialDelayMs: 300 },
      capture: { distinctId: "user-1", flushAt: 100, retryDelayMs: 60_000 },
    });
    await client.start();
    await client.ping();
    const pid = client.pid as number;
    h.shell.pause(pid);
    for (let i = 0; i < 4; i++) client.capture("in flight", { i });
    const firstFlush = client.captureQueue.flush();
    await vi.waitFor(() => expect(batchWrites(h as Harness)).toBe(1));

    const restart = nextEvent(client, "restart");
    h.shell.crash(pid);
    await restart;
    expect(await firstFlush).toEqual({ accepted: 0, pending: 4 });

    await vi.advanceTimersByTimeAsync(300);
    const events = await h.server.waitForEvents(4);
    const uuids = new Set(events.map((e) => e.uuid));
    expect(uuids.size).toBe(4);
    expect(events.map((e) => e.properties.i)).toEqual([0, 1, 2, 3]);
    expect(batchWrites(h)).toBe(2);
  });

  it("retries after a backoff when no restart event comes (e.g. a timeout)", async () => {
    // Proves the retry timer: a send that times out is kept and sent again retryDelayMs later.
    h = await startHarness();
    const client = h.client({ capture: { distinctId: "user-1", flushAt: 100, retryDelayMs: 2000 } });
    await client.start();
    await client.ping();
    const pid = client.pid as number;
    h.shell.pause(pid);
    const capture = new TelemetryCapture(
      {
        // A short per-call timeout for this test; otherwise the client's own sendBatch.
        sendBatch: (batch, options) => client.sendBatch(batch, { ...options, timeoutMs: 200 }),
        on: (name, listener) => client.on(name, listener),
      },
      { distinctId: "user-1", flushAt: 100, retryDelayMs: 2000 },
    );
    capture.capture("slow");
    const flushing = capture.flush();
    await vi.advanceTimersByTimeAsync(200); // the call's timeout fires (a webview timer)
    expect(await flushing).toEqual({ accepted: 0, pending: 1 });
    h.shell.resume(pid);
    await h.server.waitForEvents(1); // the timed-out call was carried out after all
    await vi.advanceTimersByTimeAsync(2000); // the retry
    await vi.waitFor(() => expect(capture.pending).toBe(0));
    await vi.waitFor(() => expect(h?.server.events.length).toBe(2));
    // Sent twice, with the same uuid: PostHog deduplicates.
    expect(h.server.events[0]?.uuid).toBe(h.server.events[1]?.uuid);
    capture.dispose();
  });
});
