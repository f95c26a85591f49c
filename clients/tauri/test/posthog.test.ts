/**
 * The posthog-js bridge: the real posthog-js in the test DOM, its events through the hook, the
 * real plugin-shell JS API and mockIPC to the real sidecar process, and the capture fake. The
 * same fake stands for posthog-js's own `api_host`, so what posthog-js sends itself is seen too.
 */

import { readFileSync } from "node:fs";
import { resolve } from "node:path";

import { build } from "esbuild";
import { PostHog, type CaptureResult, type PostHogConfig } from "posthog-js";
import ts from "typescript";
import { afterEach, describe, expect, it, vi } from "vitest";

import {
  SidecarUnavailableError,
  type BatchSink,
  type PostHogEvent,
  type SendBatchResult,
  type TelemetrySidecar,
} from "../src/index.js";
import {
  connectPostHog,
  sidecarBeforeSend,
  toBatchEvent,
  type BridgeLogger,
  type OptOutSink,
} from "../src/posthog.js";
import { startCaptureServer, type CaptureServer, type ReceivedEvent } from "./support/capture-server.js";
import { nextEvent, PACKAGE_DIR, startHarness, type Harness } from "./support/harness.js";

let h: Harness | undefined;
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await h?.dispose();
  h = undefined;
});

/** What a `before_send` hook placed before the bridge was handed, as JSON carries it. */
interface Seen {
  uuid: string;
  event: string;
  timestampMs: number;
  properties: Record<string, unknown>;
  $set?: Record<string, unknown>;
  $set_once?: Record<string, unknown>;
}

/** A `before_send` hook that records each event (a JSON copy) and passes it on unchanged. */
function recorder(seen: Seen[]): (result: CaptureResult) => CaptureResult {
  return (result) => {
    const copy = JSON.parse(JSON.stringify(result)) as Seen;
    copy.timestampMs = (result.timestamp as Date).getTime();
    seen.push(copy);
    return result;
  };
}

let instances = 0;

/** A posthog-js instance with its own network pointed at `apiHost` and nothing loaded from outside. */
function initPostHog(apiHost: string, config: Partial<PostHogConfig> = {}, token = "phc_from_posthog_js"): PostHog {
  instances += 1;
  return new PostHog().init(token, {
    api_host: apiHost,
    persistence: "memory",
    bootstrap: { distinctID: `anonymous-${instances}` },
    // posthog-js keeps consent in a cookie named after the token; each instance gets its own.
    consent_persistence_name: `consent-${instances}`,
    // happy-dom (like a webdriver) looks like a bot; posthog-js would drop every event.
    opt_out_useragent_filter: true,
    advanced_disable_flags: true,
    disable_external_dependency_loading: true,
    disable_session_recording: true,
    autocapture: false,
    capture_pageview: false,
    // posthog-js sends each event it keeps at once, so a test sees it without waiting 3 s.
    request_batching: false,
    ...config,
  });
}

/** A logger that keeps what the bridge reports. */
function logLines(): { lines: string[]; logger: BridgeLogger } {
  const lines: string[] = [];
  return { lines, logger: (message) => lines.push(message) };
}

/** A second capture fake standing for posthog-js's api_host, closed after the test. */
async function webHost(): Promise<CaptureServer> {
  const web = await startCaptureServer();
  cleanups.push(() => web.close());
  return web;
}

function pick(record: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((key) => key in record).map((key) => [key, record[key]]));
}

/** Each seen event arrived exactly once, with its uuid, name, distinct_id, timestamp and every property. */
function expectDeliveredOnce(received: ReceivedEvent[], seen: Seen[]): void {
  expect(received).toHaveLength(seen.length);
  for (const expected of seen) {
    const matches = received.filter((event) => event.uuid === expected.uuid);
    expect(matches, `${expected.event} ${expected.uuid}`).toHaveLength(1);
    const event = matches[0] as ReceivedEvent;
    expect(event.event).toBe(expected.event);
    expect(event.distinct_id).toBe(String(expected.properties.distinct_id));
    expect(Date.parse(event.timestamp)).toBe(expected.timestampMs);
    expect(pick(event.properties, Object.keys(expected.properties))).toEqual(expected.properties);
    if (expected.$set !== undefined) expect(event.$set).toEqual(expected.$set);
    if (expected.$set_once !== undefined) expect(event.$set_once).toEqual(expected.$set_once);
  }
}

function sampleResult(overrides: Partial<CaptureResult> = {}): CaptureResult {
  return {
    uuid: "01938a6e-7c2a-7b1e-9a51-2f4c8d0e6a11",
    event: "clicked",
    properties: {
      distinct_id: "user-1",
      token: "phc_project",
      $lib: "web",
      $lib_version: "1.449.2",
      $session_id: "s-1",
      nested: { list: [1, "two", null], flag: true },
    },
    timestamp: new Date(Date.UTC(2026, 11, 3, 8, 15, 17, 123)),
    ...overrides,
  };
}

describe("toBatchEvent", () => {
  it("keeps uuid, event, properties and person properties, takes distinct_id and the api key from properties", () => {
    // Proves the conversion rules of issue 9: every field carried over, the timestamp as RFC 3339 UTC with ms.
    const result = sampleResult({ $set: { plan: "pro" }, $set_once: { first_seen: "2026-12-01" }, $unset: ["old"] });
    const { event, apiKey } = toBatchEvent(result);
    expect(apiKey).toBe("phc_project");
    expect(event).toEqual({
      uuid: result.uuid,
      event: "clicked",
      distinct_id: "user-1",
      timestamp: "2026-12-03T08:15:17.123Z",
      properties: result.properties,
      $set: { plan: "pro" },
      $set_once: { first_seen: "2026-12-01" },
      $unset: ["old"],
    });
    expect(event.properties).not.toBe(result.properties);
  });

  it("leaves the api key to the sidecar without a token, keeps a numeric distinct_id and a string timestamp", () => {
    // Proves the fallbacks: no token -> --api-key, numbers and strings pass as they are.
    const { event, apiKey } = toBatchEvent({
      uuid: "01938a6e-7c2a-7b1e-9a51-2f4c8d0e6a12",
      event: "x",
      properties: { distinct_id: 42, token: "" },
      timestamp: "2026-12-03T09:15:17.123+01:00" as unknown as Date,
    });
    expect(apiKey).toBeUndefined();
    expect(event.distinct_id).toBe(42);
    expect(event.timestamp).toBe("2026-12-03T09:15:17.123+01:00");
  });

  it("throws TypeError for an event it cannot express", () => {
    // Proves the refusals the hook turns into 'posthog-js sends it itself'.
    expect(() => toBatchEvent(sampleResult({ properties: { token: "phc_project" } }))).toThrow(TypeError);
    expect(() => toBatchEvent(sampleResult({ properties: { distinct_id: "" } }))).toThrow(TypeError);
    expect(() => toBatchEvent(sampleResult({ timestamp: new Date(Number.NaN) }))).toThrow(TypeError);
  });
});

/** A sink that records its calls and answers as a sidecar that accepts everything. */
function recordingSink(): BatchSink & { calls: Array<{ batch: PostHogEvent[]; apiKey: string | undefined }> } {
  const calls: Array<{ batch: PostHogEvent[]; apiKey: string | undefined }> = [];
  return {
    calls,
    sendBatch: (batch, options) => {
      calls.push({ batch, apiKey: options?.apiKey });
      return Promise.resolve<SendBatchResult>({ accepted: batch.length, rejected: [], queued: batch.length });
    },
    on: () => () => {},
  };
}

describe("sidecarBeforeSend on its own", () => {
  it("returns null for queued events and $snapshot or leaveToPostHog events unchanged", async () => {
    // Proves what the hook keeps and what it leaves to posthog-js, and that flush() sends the kept ones.
    const sink = recordingSink();
    const hook = sidecarBeforeSend(sink, { flushAt: 100, leaveToPostHog: ["$web_vitals"] });
    const snapshot = sampleResult({ event: "$snapshot" });
    const vitals = sampleResult({ event: "$web_vitals" });
    expect(hook(sampleResult())).toBeNull();
    expect(hook(snapshot)).toBe(snapshot);
    expect(hook(vitals)).toBe(vitals);
    expect(hook.pending).toBe(1);
    expect(await hook.flush()).toEqual({ accepted: 1, pending: 0 });
    expect(sink.calls).toHaveLength(1);
    expect(sink.calls[0]?.batch.map((e) => e.event)).toEqual(["clicked"]);
    hook.dispose();
  });

  it("never throws: an event it cannot convert, or a sink that throws, gives the event back and logs", () => {
    // Proves the no-throw rule: posthog-js drops an event whose hook throws.
    const { lines, logger } = logLines();
    const broken = recordingSink();
    Object.defineProperty(broken, "state", {
      get: () => {
        throw new Error("state exploded");
      },
    });
    const unconvertible = sampleResult({ properties: { token: "phc_project" } });
    const hook = sidecarBeforeSend(recordingSink(), { logger });
    expect(hook(unconvertible)).toBe(unconvertible);
    const event = sampleResult();
    expect(sidecarBeforeSend(broken, { logger })(event)).toBe(event);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain('"clicked"');
    hook.dispose();
  });

  it("reports events to onDrop when there is no posthog-js instance to give them back to", async () => {
    // Proves a failing sink does not lose events silently in standalone use.
    const dropped: PostHogEvent[] = [];
    const hook = sidecarBeforeSend(
      { sendBatch: () => Promise.reject(new Error("broken sink")), on: () => () => {} },
      { flushAt: 100, onDrop: (events) => dropped.push(...events), logger: () => {} },
    );
    hook(sampleResult());
    await hook.flush();
    expect(dropped.map((e) => e.uuid)).toEqual([sampleResult().uuid]);
    hook.dispose();
  });
});

describe("posthog-js through the sidecar", () => {
  it("delivers capture, identify, alias, group, $pageview and captureException each once, unchanged", async () => {
    // Proves the main path: every kind of posthog-js event reaches capture through the sidecar, exactly as before_send saw it.
    h = await startHarness();
    const sidecar = h.client();
    await sidecar.start();
    const seen: Seen[] = [];
    const { lines, logger } = logLines();
    const ph = initPostHog(h.server.url, { before_send: [recorder(seen)], capture_pageview: true });
    const connection = connectPostHog(ph, sidecar, { flushAt: 100, flushIntervalMs: 60_000, logger });
    cleanups.push(() => connection.dispose());
    // The first $pageview comes a tick after init; connecting right after init catches it.
    await vi.waitFor(() => expect(seen.map((s) => s.event)).toContain("$pageview"));
    ph.capture("clicked", { button: "save", nested: { list: [1, "two", null] }, text: "é 🚀 \u2028" });
    ph.identify("user-42", { plan: "pro" }, { first_seen: "2026-12-01" });
    ph.alias("alias-42");
    ph.group("company", "acme", { name: "Acme" });
    ph.captureException(new Error("boom"));
    const names = seen.map((s) => s.event);
    for (const name of ["$pageview", "clicked", "$identify", "$create_alias", "$groupidentify", "$exception"]) {
      expect(names).toContain(name);
    }
    const identify = seen.find((s) => s.event === "$identify") as Seen;
    expect(identify.$set).toEqual({ plan: "pro" });
    expect(identify.$set_once).toMatchObject({ first_seen: "2026-12-01" });
    expect(connection.beforeSend.pending).toBe(seen.length);

    expect(await connection.flush()).toEqual({ accepted: seen.length, pending: 0 });
    await sidecar.flush({ timeout: 5 });
    const received = await h.server.waitForEvents(seen.length);
    expectDeliveredOnce(received, seen);
    expect(new Set(h.server.requests.map((r) => r.apiKey))).toEqual(new Set(["phc_from_posthog_js"]));
    expect(h.server.webEvents).toEqual([]);
    expect(lines).toEqual([]);
  });

  it("puts events of different tokens in different ph_send_batch calls", async () => {
    // Proves one api key per batch when one hook serves two posthog-js projects.
    h = await startHarness();
    const sidecar = h.client();
    await sidecar.start();
    const hook = sidecarBeforeSend(sidecar, { flushAt: 100 });
    cleanups.push(() => hook.dispose());
    const a = initPostHog(h.server.url, { before_send: hook }, "phc_project_a");
    const b = initPostHog(h.server.url, { before_send: hook }, "phc_project_b");
    a.capture("a1");
    b.capture("b1");
    a.capture("a2");
    await hook.flush();
    const batches = h.shell.stdinWrites
      .filter((line) => line.includes('"ph_send_batch"'))
      .map((line) => (JSON.parse(line) as { params: { api_key: string; batch: PostHogEvent[] } }).params);
    expect(batches.map((p) => [p.api_key, p.batch.map((e) => e.event)])).toEqual(
      expect.arrayContaining([
        ["phc_project_a", ["a1", "a2"]],
        ["phc_project_b", ["b1"]],
      ]),
    );
    expect(batches).toHaveLength(2);
    await sidecar.flush({ timeout: 5 });
    await h.server.waitForEvents(3);
    for (const request of h.server.requests) {
      expect(new Set(request.events.map((e) => e.properties.token))).toEqual(new Set([request.apiKey]));
    }
  });

  it("delivers everything after offline, a sidecar killed and restarted, then online", async () => {
    // Proves durability: events on disk survive SIGKILL, events captured during the restart wait in the webview.
    h = await startHarness();
    const { port } = h.server;
    await h.server.close(); // capture is down: connections are refused
    const web = await webHost();
    const sidecar = h.client({ restart: { initialDelayMs: 300 } });
    await sidecar.start();
    const seen: Seen[] = [];
    const ph = initPostHog(web.url, { before_send: [recorder(seen)] });
    const connection = connectPostHog(ph, sidecar, { flushAt: 100, flushIntervalMs: 60_000, logger: () => {} });
    cleanups.push(() => connection.dispose());

    for (let i = 0; i < 5; i++) ph.capture("offline", { i });
    ph.identify("user-7", { plan: "team" });
    expect(await connection.flush()).toEqual({ accepted: 6, pending: 0 });
    expect((await sidecar.status()).queued).toBe(6);

    const restart = nextEvent(sidecar, "restart");
    h.shell.crash(sidecar.pid as number);
    await restart;
    const spawned = nextEvent(sidecar, "spawn");
    ph.capture("during restart", { i: 1 });
    ph.capture("during restart", { i: 2 });
    expect(await connection.flush()).toEqual({ accepted: 0, pending: 2 });
    await spawned;
    await vi.waitFor(() => expect(connection.beforeSend.pending).toBe(0), { timeout: 10_000 });
    ph.capture("after restart");
    await connection.flush();
    expect((await sidecar.status()).queued).toBe(9);

    const capture = await startCaptureServer({ port }); // online again
    cleanups.push(() => capture.close());
    await sidecar.flush({ timeout: 10 });
    const received = await capture.waitForEvents(seen.length);
    expect(seen).toHaveLength(9);
    expectDeliveredOnce(received, seen);
    expect(web.webEvents).toEqual([]);
  });

  it("mirrors opt_out_capturing() into ph_set_opt_out, which purges the disk queue, and opt_in_capturing() back", async () => {
    // Proves opt-out stays one decision: the queued events are purged, later ones refused, opt-in restores sending.
    h = await startHarness();
    const { port } = h.server;
    await h.server.close();
    const web = await webHost();
    const sidecar = h.client();
    await sidecar.start();
    const ph = initPostHog(web.url);
    // flushAt 1: the $opt_in event is sent in the same task as opt_in_capturing(); it must not beat ph_set_opt_out(false).
    const connection = connectPostHog(ph, sidecar, { flushAt: 1, logger: () => {} });
    cleanups.push(() => connection.dispose());
    for (let i = 0; i < 4; i++) ph.capture("before opt-out", { i });
    await vi.waitFor(async () => expect((await sidecar.status()).queued).toBe(4), { timeout: 10_000 });

    ph.opt_out_capturing();
    await vi.waitFor(
      async () => {
        const status = await sidecar.status();
        expect(status).toMatchObject({ opted_out: true, queued: 0 });
        expect(status.dropped.opt_out).toBe(4);
      },
      { timeout: 10_000 },
    );
    expect(ph.capture("while opted out")).toBeUndefined();
    expect(connection.beforeSend.pending).toBe(0);

    ph.opt_in_capturing();
    const capture = await startCaptureServer({ port });
    cleanups.push(() => capture.close());
    await vi.waitFor(async () => expect((await sidecar.status()).queued).toBe(1), { timeout: 10_000 });
    expect((await sidecar.status()).opted_out).toBe(false);
    await sidecar.flush({ timeout: 10 });
    const received = await capture.waitForEvents(1);
    expect(received.map((e) => e.event)).toEqual(["$opt_in"]);
    expect(web.webEvents).toEqual([]);
  });

  it("opts the sidecar out at connect when posthog-js starts opted out", async () => {
    // Proves the initial state is mirrored (opt_out_capturing_by_default), not only later calls.
    h = await startHarness();
    const sidecar = h.client();
    await sidecar.start();
    const web = await webHost();
    const ph = initPostHog(web.url, { opt_out_capturing_by_default: true });
    expect(ph.has_opted_out_capturing()).toBe(true);
    const connection = connectPostHog(ph, sidecar, { logger: () => {} });
    cleanups.push(() => connection.dispose());
    await connection.syncOptOut();
    expect((await sidecar.status()).opted_out).toBe(true);
  });

  it("leaves $snapshot and leaveToPostHog events to posthog-js, which sends them itself", async () => {
    // Proves session replay (and named events) never go through the sidecar.
    h = await startHarness();
    const sidecar = h.client();
    await sidecar.start();
    const web = await webHost();
    const seen: Seen[] = [];
    const ph = initPostHog(web.url, { before_send: [recorder(seen)] });
    const connection = connectPostHog(ph, sidecar, { flushAt: 100, leaveToPostHog: ["left alone"], logger: () => {} });
    cleanups.push(() => connection.dispose());
    ph.capture("$snapshot", { $snapshot_data: [{ type: 2, data: {} }], $session_id: "s-1", $window_id: "w-1" });
    ph.capture("left alone");
    ph.capture("through the sidecar");
    expect(connection.beforeSend.pending).toBe(1);
    const sentByPostHog = await web.waitForWebEvents(2);
    expect(sentByPostHog.map((e) => [e.event, e.uuid])).toEqual(
      expect.arrayContaining(seen.filter((s) => s.event !== "through the sidecar").map((s) => [s.event, s.uuid])),
    );
    await connection.flush();
    await sidecar.flush({ timeout: 5 });
    const received = await h.server.waitForEvents(1);
    expect(received.map((e) => e.event)).toEqual(["through the sidecar"]);
  });

  it.each([
    ["a missing binary", { program: "binaries/not-configured" }],
    ["exit code 2", { args: ["--max-queue", "0"] }],
  ])("gives events back to posthog-js when the sidecar cannot start (%s), and says so once", async (_name, options) => {
    // Proves nothing is lost when there is no sidecar: waiting events are captured again with their uuid, new ones pass through.
    h = await startHarness();
    const sidecar: TelemetrySidecar = h.client(options);
    const web = await webHost();
    const seen: Seen[] = [];
    const { lines, logger } = logLines();
    const ph = initPostHog(web.url, { before_send: [recorder(seen)] });
    const connection = connectPostHog(ph, sidecar, { flushAt: 100, logger });
    cleanups.push(() => connection.dispose());
    ph.capture("before start", { n: 1 });
    ph.capture("before start", { n: 2 });
    expect(connection.beforeSend.pending).toBe(2);

    const stopped = new Promise<void>((done) => {
      const off = sidecar.on("state", (state) => {
        if (state === "stopped") {
          off();
          done();
        }
      });
    });
    await sidecar.start().catch(() => {});
    await stopped;
    const handedBack = await web.waitForWebEvents(2);
    const original = seen.slice(0, 2);
    expect(handedBack.map((e) => e.uuid).sort()).toEqual(original.map((s) => s.uuid).sort());
    for (const event of handedBack) {
      const before = original.find((s) => s.uuid === event.uuid) as Seen;
      expect(event.event).toBe(before.event);
      expect(event.properties).toEqual(before.properties);
      expect(Date.parse(event.timestamp as string)).toBe(before.timestampMs);
    }
    ph.capture("after the failure");
    const all = await web.waitForWebEvents(3);
    expect(all.map((e) => e.event)).toContain("after the failure");
    expect(connection.beforeSend.pending).toBe(0);
    expect(h.server.events).toEqual([]);
    expect(lines.filter((line) => line.includes("stopped"))).toHaveLength(1);
  });

  it("switches to posthog-js when the sidecar is closed and back when it is started again, saying so each time", async () => {
    // Proves the closed case: events queued at close() and captured while closed go to posthog-js; a restart takes over again.
    h = await startHarness();
    const sidecar = h.client();
    await sidecar.start();
    const web = await webHost();
    const seen: Seen[] = [];
    const { lines, logger } = logLines();
    const ph = initPostHog(web.url, { before_send: [recorder(seen)] });
    const connection = connectPostHog(ph, sidecar, { flushAt: 100, logger });
    cleanups.push(() => connection.dispose());
    ph.capture("queued at close");
    await sidecar.close();
    ph.capture("while closed");
    const sent = await web.waitForWebEvents(2);
    // The recorder sees the handed-back event a second time, with the same uuid.
    const byUuid = new Map(seen.map((s) => [s.uuid, s.event]));
    expect(byUuid.size).toBe(2);
    expect(new Map(sent.map((e) => [e.uuid, e.event]))).toEqual(byUuid);
    expect(connection.beforeSend.pending).toBe(0);

    await sidecar.start();
    ph.capture("after start");
    expect(connection.beforeSend.pending).toBe(1);
    await connection.flush();
    await sidecar.flush({ timeout: 5 });
    const received = await h.server.waitForEvents(1);
    expect(received.map((e) => e.event)).toEqual(["after start"]);
    expect(web.webEvents).toHaveLength(2);
    expect(lines.filter((line) => line.includes("stopped"))).toHaveLength(1);
    expect(lines.filter((line) => line.includes("is back"))).toHaveLength(1);
  });

  it("gives the oldest events back to posthog-js when the webview queue overflows, and the rest at dispose()", async () => {
    // Proves maxQueueSize does not lose events while the sidecar is away for long.
    const web = await webHost();
    const away: OptOutSink = {
      sendBatch: () => Promise.reject(new SidecarUnavailableError("away", "restarting")),
      on: () => () => {},
      setOptOut: () => Promise.reject(new SidecarUnavailableError("away", "restarting")),
    };
    const dropped: PostHogEvent[] = [];
    const ph = initPostHog(web.url);
    const connection = connectPostHog(ph, away, {
      flushAt: 100,
      maxQueueSize: 2,
      onDrop: (events) => dropped.push(...events),
      logger: () => {},
    });
    cleanups.push(() => connection.dispose());
    for (const name of ["first", "second", "third"]) ph.capture(name);
    const sent = await web.waitForWebEvents(1);
    expect(sent.map((e) => e.event)).toEqual(["first"]);
    expect(connection.beforeSend.pending).toBe(2);
    connection.dispose(); // the other two go back too
    // posthog-js may send the two in separate requests, which can reach the server in either order.
    expect((await web.waitForWebEvents(3)).map((e) => e.event).sort()).toEqual(["first", "second", "third"]);
    expect(dropped).toEqual([]);
  });

  it("gives events back to posthog-js, as they were, when the sink fails", async () => {
    // Proves a sink that cannot take a batch (a non-retryable failure) loses nothing and changes nothing.
    const web = await webHost();
    const sink: OptOutSink = {
      sendBatch: () => Promise.reject(new Error("broken sink")),
      on: () => () => {},
      setOptOut: () => Promise.resolve({ opted_out: false, purged: 0 }),
    };
    const dropped: PostHogEvent[] = [];
    const seen: Seen[] = [];
    const ph = initPostHog(web.url, { before_send: [recorder(seen)] });
    const connection = connectPostHog(ph, sink, { flushAt: 1, onDrop: (events) => dropped.push(...events), logger: () => {} });
    cleanups.push(() => connection.dispose());
    ph.capture("one");
    ph.identify("user-9", { plan: "pro" }, { first_seen: "2026-12-01" });
    const sent = await web.waitForWebEvents(2);
    const original = seen.slice(0, 2);
    // Each hand-back may go out in its own request, so arrival order is not checked.
    expect(sent.map((e) => [e.event, e.uuid]).sort()).toEqual(original.map((s) => [s.event, s.uuid]).sort());
    for (const event of sent) {
      const before = original.find((s) => s.uuid === event.uuid) as Seen;
      expect(event.properties).toEqual(before.properties);
      expect(event.$set).toEqual(before.$set);
      expect(event.$set_once).toEqual(before.$set_once);
      expect(Date.parse(event.timestamp)).toBe(before.timestampMs);
    }
    expect(dropped).toEqual([]);
  });

  it("dispose() removes the hook and the opt-out wrappers and gives queued events back", async () => {
    // Proves a clean disconnect: posthog-js is as before, nothing queued is lost.
    const web = await webHost();
    const sink: OptOutSink = { ...recordingSink(), setOptOut: () => Promise.resolve({}) };
    const seen: Seen[] = [];
    const mine = recorder(seen);
    const ph = initPostHog(web.url, { before_send: mine });
    const ownOptOut = Object.prototype.hasOwnProperty.call(ph, "opt_out_capturing");
    const connection = connectPostHog(ph, sink, { flushAt: 100, logger: () => {} });
    expect(ph.config.before_send).toEqual([mine, connection.beforeSend]);
    expect(Object.prototype.hasOwnProperty.call(ph, "opt_out_capturing")).toBe(true);
    ph.capture("queued");
    connection.dispose();
    expect(ph.config.before_send).toEqual([mine]);
    expect(Object.prototype.hasOwnProperty.call(ph, "opt_out_capturing")).toBe(ownOptOut);
    const sent = await web.waitForWebEvents(1);
    expect(sent.map((e) => [e.event, e.uuid])).toEqual([["queued", seen[0]?.uuid]]);
    expect(sent[0]?.properties).toEqual(seen[0]?.properties);
  });
});

describe("packaging", () => {
  it("keeps posthog-js out of the main entry and out of the bridge's runtime code", async () => {
    // Proves issue 9 item 3: posthog-js is an optional peer; only types of it reach the subpath.
    const bundle = async (entry: string): Promise<string[]> => {
      const result = await build({
        entryPoints: [resolve(PACKAGE_DIR, entry)],
        bundle: true,
        write: false,
        metafile: true,
        format: "esm",
        platform: "browser",
        logLevel: "silent",
      });
      return Object.keys(result.metafile.inputs);
    };
    const main = await bundle("src/index.ts");
    expect(main.some((input) => input.includes("posthog"))).toBe(false);
    const bridge = await bundle("src/posthog.ts");
    expect(bridge.some((input) => input.includes("node_modules/posthog-js"))).toBe(false);
    expect(bridge.some((input) => input.endsWith("src/posthog.ts"))).toBe(true);

    // Types too: nothing the main entry reaches names posthog-js, so its .d.ts needs no posthog-js.
    const reached = new Set<string>();
    const visit = (file: string): void => {
      if (reached.has(file)) return;
      reached.add(file);
      for (const { fileName } of ts.preProcessFile(readFileSync(file, "utf8"), true, true).importedFiles) {
        expect(fileName.startsWith("posthog-js"), `${file} imports ${fileName}`).toBe(false);
        if (fileName.startsWith(".")) visit(resolve(file, "..", fileName.replace(/\.js$/, ".ts")));
      }
    };
    visit(resolve(PACKAGE_DIR, "src/index.ts"));
    expect(reached.has(resolve(PACKAGE_DIR, "src/posthog.ts"))).toBe(false);
    expect(reached.size).toBeGreaterThan(5);

    const manifest = JSON.parse(readFileSync(resolve(PACKAGE_DIR, "package.json"), "utf8")) as {
      exports: Record<string, { types: string; import: string }>;
      peerDependenciesMeta: Record<string, { optional: boolean }>;
    };
    expect(manifest.exports["./posthog"]).toEqual({ types: "./dist/posthog.d.ts", import: "./dist/posthog.js" });
    expect(manifest.peerDependenciesMeta["posthog-js"]).toEqual({ optional: true });
  });
});
