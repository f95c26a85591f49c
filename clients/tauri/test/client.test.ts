/**
 * The client through the real `@tauri-apps/plugin-shell` JS API, against the real sidecar process.
 */

import { afterEach, describe, expect, it, vi } from "vitest";

import {
  RpcErrorCode,
  SidecarClosedError,
  SidecarRpcError,
  SidecarTimeoutError,
  SidecarUnavailableError,
  type StatusResult,
} from "../src/index.js";
import { nextEvent, startHarness, type Harness } from "./support/harness.js";

let h: Harness | undefined;

afterEach(async () => {
  vi.useRealTimers();
  await h?.dispose();
  h = undefined;
});

/** The `ph_status` fields of the contract, plus `quarantined_db` and `durability` from the README. */
const STATUS_KEYS: Array<keyof StatusResult> = [
  "version",
  "queued",
  "oldest_event_age_s",
  "delivered",
  "dropped",
  "last_error",
  "next_attempt_in_s",
  "host",
  "opted_out",
  "quarantined_db",
  "durability",
];

describe("the six methods", () => {
  it("round-trips ping, ph_send_batch, ph_flush, ph_status, ph_set_opt_out and shutdown", async () => {
    // Proves every typed method reaches the real sidecar and its result has the contract's shape.
    h = await startHarness();
    const client = h.client();
    await client.start();
    expect(client.state).toBe("running");
    expect(h.shell.spawns[0]).toMatchObject({
      program: "binaries/telemetry-sidecar",
      args: ["--data-dir", h.dataDir, "--host", h.server.url, "--api-key", "phc_test"],
      options: { sidecar: true },
    });

    const ping = await client.ping();
    expect(ping.version).toMatch(/^\d+\.\d+\.\d+/);

    const sent = await client.sendBatch([
      { event: "app opened", distinct_id: "user-42", properties: { plan: "pro" } },
      { event: "", distinct_id: "user-42" },
    ]);
    expect(sent.accepted).toBe(1);
    expect(sent.rejected).toEqual([{ index: 1, error: expect.any(String) }]);
    expect(typeof sent.queued).toBe("number");

    const flushed = await client.flush({ timeout: 5 });
    expect(flushed).toEqual({ delivered: expect.any(Number), queued: 0 });
    const [received] = await h.server.waitForEvents(1);
    expect(received).toMatchObject({ event: "app opened", distinct_id: "user-42", properties: { plan: "pro" } });
    expect(h.server.requests[0]).toMatchObject({ apiKey: "phc_test", gzip: true });

    const status = await client.status();
    expect(Object.keys(status).sort()).toEqual([...STATUS_KEYS].sort());
    expect(status).toMatchObject({
      version: ping.version,
      queued: 0,
      oldest_event_age_s: null,
      delivered: 1,
      dropped: { overflow: 0, rejected: 0, retries_exhausted: 0, opt_out: 0 },
      last_error: null,
      next_attempt_in_s: null,
      host: h.server.url,
      opted_out: false,
    });

    expect(await client.setOptOut(true)).toEqual({ opted_out: true, purged: 0 });
    expect((await client.sendBatch([{ event: "while out", distinct_id: "user-42" }])).accepted).toBe(0);
    const out = await client.status();
    expect(out.opted_out).toBe(true);
    expect(out.dropped.opt_out).toBe(1);
    expect(await client.setOptOut(false)).toEqual({ opted_out: false, purged: 0 });

    const exit = nextEvent(client, "exit");
    expect(await client.shutdown()).toEqual({ ok: true });
    expect(await exit).toMatchObject({ code: 0, signal: null, expected: true });
    expect(client.state).toBe("stopped");
    expect(h.shell.spawns).toHaveLength(1);
  });

  it("turns JSON-RPC error answers into SidecarRpcError with code, message and data", async () => {
    // Proves -32602 (no api key anywhere) and -32601 (unknown method) reach the caller typed.
    h = await startHarness();
    const client = h.client({ withApiKey: false });
    await client.start();

    const noKey = await client.sendBatch([{ event: "e", distinct_id: "u" }]).catch((e: unknown) => e);
    expect(noKey).toBeInstanceOf(SidecarRpcError);
    expect(noKey).toMatchObject({
      code: RpcErrorCode.InvalidParams,
      method: "ph_send_batch",
      rpcMessage: "Invalid params",
      data: expect.stringContaining("api_key"),
    });

    const unknown = await client.request("no_such_method").catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(SidecarRpcError);
    expect(unknown).toMatchObject({ code: RpcErrorCode.MethodNotFound });

    // The client stays usable after error answers.
    expect((await client.ping()).version).toBeTruthy();
  });

  it("writes exactly one newline-terminated JSON line per call, with increasing ids", async () => {
    // Proves the framing of requests: the plugin adds no newline, so the client must.
    h = await startHarness();
    const client = h.client();
    await client.start();
    await Promise.all([client.ping(), client.ping(), client.status()]);
    expect(h.shell.stdinWrites).toHaveLength(3);
    const ids = h.shell.stdinWrites.map((line) => {
      expect(line.endsWith("\n")).toBe(true);
      expect(line.slice(0, -1)).not.toContain("\n");
      return (JSON.parse(line) as { id: number; jsonrpc: string }).id;
    });
    expect(new Set(ids).size).toBe(3);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
  });
});

describe("stdout framing through the plugin", () => {
  it("parses answers that arrive split over several Stdout events, with \\r\\n endings", async () => {
    // Proves the buffering: each answer line is cut into 2-3 events ("...\r" then "\n").
    h = await startHarness({ stdoutChunking: "split" });
    const client = h.client();
    await client.start();
    expect((await client.ping()).version).toBeTruthy();
    const sent = await client.sendBatch([{ event: "split", distinct_id: "u" }]);
    expect(sent.accepted).toBe(1);
    const status = await client.status();
    expect(status.host).toBe(h.server.url);
    expect(h.shell.stdoutEvents()).toBeGreaterThanOrEqual(3 * 2);
    expect(h.logs.filter((log) => log.source === "client")).toEqual([]);
  });

  it("forwards the sidecar's stderr lines to the logger, without the API key", async () => {
    // Proves stderr reaches the optional logger line by line.
    h = await startHarness();
    const client = h.client({ logLevel: "debug" });
    await client.start();
    await client.ping();
    await vi.waitFor(() => {
      expect(h?.logs.some((log) => log.source === "stderr" && log.message.includes("ready"))).toBe(true);
    });
    expect(h.logs.every((log) => !log.message.includes("phc_test"))).toBe(true);
  });
});

describe("timeouts and process death", () => {
  it("rejects a call with SidecarTimeoutError when no answer comes in time, and ignores the late answer", async () => {
    // Proves per-call timeouts: the real process is paused (SIGSTOP) so it cannot answer.
    h = await startHarness();
    const client = h.client();
    await client.start();
    await client.ping();
    const pid = client.pid as number;
    h.shell.pause(pid);
    try {
      const error = await client.ping({ timeoutMs: 300 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SidecarTimeoutError);
      expect(error).toMatchObject({ method: "ping", timeoutMs: 300 });
    } finally {
      h.shell.resume(pid);
    }
    // The late answer is dropped with a note; the next call works.
    expect((await client.ping()).version).toBeTruthy();
    await vi.waitFor(() => {
      expect(h?.logs.some((log) => log.source === "client" && log.message.includes("no such call"))).toBe(true);
    });
  });

  it("rejects every pending call with SidecarClosedError when the child is killed", async () => {
    // Proves no call hangs when the process dies: SIGKILL the real process while calls wait.
    h = await startHarness();
    const client = h.client({ restart: false });
    await client.start();
    const pid = client.pid as number;
    h.shell.pause(pid); // the calls below are written but never answered
    const calls = [
      client.ping().catch((e: unknown) => e),
      client.sendBatch([{ event: "lost?", distinct_id: "u" }]).catch((e: unknown) => e),
      client.flush({ timeout: 30 }).catch((e: unknown) => e),
    ];
    await vi.waitFor(() => expect(h?.shell.stdinWrites).toHaveLength(3));
    const exit = nextEvent(client, "exit");
    h.shell.crash(pid);
    for (const error of await Promise.all(calls)) {
      expect(error).toBeInstanceOf(SidecarClosedError);
      expect((error as SidecarClosedError).exit).toEqual({ code: null, signal: 9 });
      expect((error as Error).message).toContain("killed by signal 9");
    }
    expect(await exit).toMatchObject({ signal: 9, expected: false });
    expect(client.state).toBe("stopped");
    const after = await client.ping().catch((e: unknown) => e);
    expect(after).toBeInstanceOf(SidecarUnavailableError);
  });

  it("rejects pending calls on the plugin's Error event, ends the process and restarts it", async () => {
    // Proves the `error` path: calls fail with SidecarClosedError, the child is killed, a restart follows.
    h = await startHarness();
    const client = h.client({ restart: { initialDelayMs: 50 } });
    await client.start();
    const pid = client.pid as number;
    h.shell.pause(pid);
    const pending = client.ping().catch((e: unknown) => e);
    await vi.waitFor(() => expect(h?.shell.stdinWrites).toHaveLength(1));
    const spawned = nextEvent(client, "spawn");
    h.shell.emitError(pid, "stream did not contain valid UTF-8");
    const error = await pending;
    h.shell.resume(pid); // whatever is left of it (a one-file program) may now see its parent gone
    expect(error).toBeInstanceOf(SidecarClosedError);
    expect((error as Error).message).toContain("valid UTF-8");
    expect((await spawned).pid).not.toBe(pid);
    expect((await client.ping()).version).toBeTruthy();
    expect(h.logs.some((log) => log.source === "client" && log.message.includes("valid UTF-8"))).toBe(true);
  });

  it("kill() goes through plugin:shell|kill, ends the process and does not restart it", async () => {
    // Proves an intentional kill ends the process for good, even with restarts on.
    h = await startHarness();
    const client = h.client({ restart: { initialDelayMs: 10 } });
    await client.start();
    await client.ping();
    const exit = nextEvent(client, "exit");
    const killing = client.kill();
    expect(client.state).toBe("stopping");
    expect(await client.ping().catch((e: unknown) => e)).toBeInstanceOf(SidecarUnavailableError);
    await killing;
    expect(await exit).toMatchObject({ signal: 9, expected: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(client.state).toBe("stopped");
    expect(h.shell.spawns).toHaveLength(1);
  });

  it("close() shuts the sidecar down cleanly (exit 0) and does not restart it", async () => {
    // Proves the graceful path: shutdown answered, exit code 0, no restart afterwards.
    h = await startHarness();
    const client = h.client({ restart: { initialDelayMs: 10 } });
    await client.start();
    const exit = nextEvent(client, "exit");
    await client.close();
    expect(await exit).toMatchObject({ code: 0, expected: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(client.state).toBe("stopped");
    expect(h.shell.spawns).toHaveLength(1);
  });

  it("rejects start() when the plugin refuses to spawn the sidecar", async () => {
    // Proves a spawn error (a program not in externalBin) surfaces as SidecarUnavailableError.
    h = await startHarness();
    const client = h.client({ program: "binaries/not-configured" });
    const error = await client.start().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SidecarUnavailableError);
    expect((error as Error).message).toContain("not allowed");
    expect(client.state).toBe("stopped");
  });
});

describe("restart after a crash", () => {
  it("does not restart a sidecar that refused its arguments (exit 2)", async () => {
    // Proves a configuration error ends in `stopped` with an error event, not a restart loop.
    h = await startHarness();
    const client = h.client({ args: ["--max-queue", "0"], restart: { initialDelayMs: 10 } });
    const error = nextEvent(client, "error");
    const exit = nextEvent(client, "exit");
    await client.start();
    expect(await exit).toMatchObject({ code: 2, expected: false });
    expect(await error).toMatchObject({ willRetry: false });
    expect(client.state).toBe("stopped");
    await vi.waitFor(() => {
      expect(h?.logs.some((log) => log.source === "stderr" && log.message.includes("max-queue"))).toBe(true);
    });
    expect(h.shell.spawns).toHaveLength(1);
  });

  it("restarts with exponential backoff after SIGKILL, and not before the delay", async () => {
    // Proves the backoff schedule (fake webview timers) around a real process crashing twice.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    h = await startHarness();
    const client = h.client({ restart: { initialDelayMs: 200, factor: 2, maxDelayMs: 1000 } });
    await client.start();
    const firstPid = client.pid as number;
    await client.ping();

    let restart = nextEvent(client, "restart");
    h.shell.crash(firstPid);
    expect(await restart).toEqual({ attempt: 1, delayMs: 200 });
    expect(client.state).toBe("restarting");
    expect(await client.ping().catch((e: unknown) => e)).toBeInstanceOf(SidecarUnavailableError);

    await vi.advanceTimersByTimeAsync(199);
    expect(h.shell.spawns).toHaveLength(1);
    let spawned = nextEvent(client, "spawn");
    await vi.advanceTimersByTimeAsync(1);
    expect(await spawned).toMatchObject({ restarts: 1 });
    expect(client.pid).not.toBe(firstPid);
    expect((await client.ping()).version).toBeTruthy();

    // A second crash soon after: the delay doubles.
    restart = nextEvent(client, "restart");
    h.shell.crash(client.pid as number);
    expect(await restart).toEqual({ attempt: 2, delayMs: 400 });
    await vi.advanceTimersByTimeAsync(399);
    expect(h.shell.spawns).toHaveLength(2);
    spawned = nextEvent(client, "spawn");
    await vi.advanceTimersByTimeAsync(1);
    expect(await spawned).toMatchObject({ restarts: 2 });
    expect((await client.status()).host).toBe(h.server.url);
    expect(h.shell.spawns).toHaveLength(3);
  });
});
