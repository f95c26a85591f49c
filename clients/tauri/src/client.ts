/**
 * `TelemetrySidecar`: spawns the sidecar through `@tauri-apps/plugin-shell` and speaks
 * line-delimited JSON-RPC 2.0 with it over stdin/stdout.
 */

import { Command, type Child, type SpawnOptions } from "@tauri-apps/plugin-shell";

import { TelemetryCapture, type CaptureOptions } from "./capture.js";
import { Emitter } from "./emitter.js";
import {
  SidecarClosedError,
  SidecarRpcError,
  SidecarTimeoutError,
  SidecarUnavailableError,
} from "./errors.js";
import { LineDecoder } from "./framing.js";
import type {
  ExitStatus,
  FlushResult,
  OptOutResult,
  PingResult,
  PostHogEvent,
  SendBatchResult,
  ShutdownResult,
  SidecarMethod,
  SidecarMethods,
  StatusResult,
} from "./types.js";

/** The `bundle.externalBin` entry the README's Tauri setup uses. */
export const DEFAULT_PROGRAM = "binaries/telemetry-sidecar";
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
/** `ph_flush` waits up to its own `timeout`; the call's timeout adds this margin to it. */
const FLUSH_TIMEOUT_MARGIN_MS = 5_000;
const DEFAULT_FLUSH_TIMEOUT_S = 10;
const DEFAULT_CLOSE_TIMEOUT_MS = 3_000;
/** The sidecar's exit code for a bad option or value. */
const EXIT_USAGE = 2;

/** Where a log message came from: a line the sidecar wrote on stderr, or the client itself. */
export type LogSource = "stderr" | "client";
/** Receives the sidecar's stderr lines and the client's own diagnostics. */
export type SidecarLogger = (message: string, source: LogSource) => void;

/** How the client restarts the sidecar after it crashed. */
export interface RestartOptions {
  /** Delay before the first restart. Default 500 ms. */
  initialDelayMs?: number;
  /** Cap on the delay. Default 30 s. */
  maxDelayMs?: number;
  /** Growth of the delay per consecutive crash. Default 2. */
  factor?: number;
  /** Fraction of the delay taken off at random, 0 to 1 (0.5: between half and all of it). Default 0. */
  jitter?: number;
  /** Consecutive failed starts before giving up. Default: never give up. */
  maxAttempts?: number;
  /** A process that ran this long before crashing resets the backoff. Default 10 s. */
  stableAfterMs?: number;
}

/** Options of {@link TelemetrySidecar}. */
export interface TelemetrySidecarOptions {
  /** The sidecar as named in `bundle.externalBin` and the shell capability. Default `binaries/telemetry-sidecar`. */
  program?: string;
  /** `--data-dir`: where `telemetry.db` lives; pass `await appDataDir()`. */
  dataDir?: string;
  /** `--host`: capture host URL, or `eu` / `us`. */
  host?: string;
  /** `--api-key`: the project key used when a call carries none. */
  apiKey?: string;
  /** `--log-level` of the sidecar's stderr. */
  logLevel?: "debug" | "info" | "warning" | "error";
  /** More arguments, appended after the ones above (e.g. `["--max-queue", "1000"]`). */
  args?: string[];
  /** `cwd`, `env` and `encoding` for the spawn, as the shell plugin takes them. */
  spawnOptions?: SpawnOptions;
  /** Default timeout of a call. Default 10 s. */
  requestTimeoutMs?: number;
  /** Restart after a crash (default: on, 500 ms doubling to 30 s); `false` turns it off. */
  restart?: RestartOptions | false;
  /** Receives the sidecar's stderr lines and the client's diagnostics. */
  logger?: SidecarLogger;
  /** Options of the batching queue behind {@link TelemetrySidecar.capture}. */
  capture?: CaptureOptions;
}

/** Per-call options. */
export interface CallOptions {
  /** Overrides the client's `requestTimeoutMs` for this call. */
  timeoutMs?: number;
}

/**
 * - `idle`: never started. `starting`: the spawn is under way (calls wait for it).
 * - `running`: calls are sent. `restarting`: crashed, a restart is scheduled (calls fail at once).
 * - `stopping`: `shutdown()`, `close()` or `kill()` is under way. `stopped`: no process, none coming.
 */
export type SidecarState = "idle" | "starting" | "running" | "restarting" | "stopping" | "stopped";

/** Events of {@link TelemetrySidecar.on}. */
export interface SidecarEvents {
  state: SidecarState;
  /** A process started (first start or restart). */
  spawn: { pid: number; restarts: number };
  /** A process ended; `expected` is false for a crash. */
  exit: ExitStatus & { pid: number; expected: boolean };
  /** A restart was scheduled after a crash. */
  restart: { attempt: number; delayMs: number };
  /** Starting or restarting failed; `willRetry` tells whether another restart is scheduled. */
  error: { error: unknown; willRetry: boolean };
}

interface PendingCall {
  method: string;
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** One spawned process and what belongs to it alone. */
interface Proc {
  child: Child | null;
  pid: number | null;
  exited: boolean;
  /** Set before asking it to stop, so its exit is not taken for a crash. */
  expectExit: boolean;
  writes: Promise<void>;
  stdout: LineDecoder;
  stderr: LineDecoder;
  startedAt: number;
}

type ResolvedRestart = Required<RestartOptions>;

const RESTART_DEFAULTS: ResolvedRestart = {
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  factor: 2,
  jitter: 0,
  maxAttempts: Number.POSITIVE_INFINITY,
  stableAfterMs: 10_000,
};

/**
 * A typed client of the telemetry sidecar, spawned with `Command.sidecar(...)`.
 *
 * ```ts
 * const sidecar = new TelemetrySidecar({ dataDir: await appDataDir(), apiKey: "phc_..." });
 * await sidecar.start();
 * sidecar.capture("app opened", { plan: "pro" });
 * ```
 */
export class TelemetrySidecar {
  readonly #program: string;
  readonly #args: string[];
  readonly #spawnOptions: SpawnOptions | undefined;
  readonly #requestTimeoutMs: number;
  readonly #restart: ResolvedRestart | null;
  readonly #logger: SidecarLogger;
  readonly #captureOptions: CaptureOptions;
  readonly #events = new Emitter<SidecarEvents>();
  readonly #pending = new Map<number, PendingCall>();

  #state: SidecarState = "idle";
  #proc: Proc | null = null;
  #starting: Promise<void> | null = null;
  #nextId = 1;
  #restartTimer: ReturnType<typeof setTimeout> | undefined;
  #restartAttempt = 0;
  #restarts = 0;
  /** Set by shutdown(), close() and kill(): no restart until the next start(). */
  #stopRequested = false;
  #exitWaiters: Array<() => void> = [];
  #capture: TelemetryCapture | undefined;

  constructor(options: TelemetrySidecarOptions = {}) {
    this.#program = options.program ?? DEFAULT_PROGRAM;
    this.#args = buildArgs(options);
    this.#spawnOptions = options.spawnOptions;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#restart = options.restart === false ? null : { ...RESTART_DEFAULTS, ...options.restart };
    this.#logger = options.logger ?? (() => {});
    this.#captureOptions = options.capture ?? {};
  }

  /** The client's state (see {@link SidecarState}). */
  get state(): SidecarState {
    return this.#state;
  }

  /** The running process's id, or null. */
  get pid(): number | null {
    return this.#proc?.pid ?? null;
  }

  /** The arguments the sidecar is spawned with. */
  get args(): readonly string[] {
    return this.#args;
  }

  /** Listen to an event (see {@link SidecarEvents}); returns a function that stops listening. */
  on<K extends keyof SidecarEvents>(name: K, listener: (payload: SidecarEvents[K]) => void): () => void {
    return this.#events.on(name, listener);
  }

  /**
   * Spawn the sidecar. Resolves once the plugin reports the process started; rejects when the
   * spawn is refused (no such sidecar, not allowed by the capability). Calling it while
   * started is a no-op.
   */
  async start(): Promise<void> {
    if (this.#state === "running") return;
    if (this.#state === "starting" && this.#starting !== null) return this.#starting;
    if (this.#state === "stopping") {
      throw new SidecarUnavailableError("the sidecar is stopping; await close() before starting again", this.#state);
    }
    this.#cancelRestart();
    this.#stopRequested = false;
    this.#restartAttempt = 0;
    try {
      await this.#spawn();
    } catch (error) {
      if (this.#proc === null) this.#setState("stopped");
      throw error;
    }
  }

  /**
   * Send one JSON-RPC request and return its result. Rejects with {@link SidecarRpcError} for
   * an error answer, {@link SidecarTimeoutError}, {@link SidecarClosedError} when the process ends
   * first, or {@link SidecarUnavailableError} when it is not running.
   */
  async request<M extends SidecarMethod>(
    method: M,
    params?: SidecarMethods[M]["params"],
    options?: CallOptions,
  ): Promise<SidecarMethods[M]["result"]>;
  async request(method: string, params?: unknown, options?: CallOptions): Promise<unknown>;
  async request(method: string, params?: unknown, options: CallOptions = {}): Promise<unknown> {
    if (this.#state === "starting" && this.#starting !== null) {
      await this.#starting.catch(() => {});
    }
    const proc = this.#proc;
    if (this.#state !== "running" || proc === null || proc.child === null || proc.exited) {
      throw new SidecarUnavailableError(`${method}: the sidecar is not running (${this.#state})`, this.#state);
    }
    return this.#send(proc, method, params, options.timeoutMs ?? this.#requestTimeoutMs);
  }

  /** `ph_send_batch`: validate and commit events to the sidecar's queue. */
  sendBatch(
    batch: PostHogEvent[],
    options: CallOptions & { apiKey?: string } = {},
  ): Promise<SendBatchResult> {
    const params: SidecarMethods["ph_send_batch"]["params"] = { batch };
    if (options.apiKey !== undefined) params.api_key = options.apiKey;
    return this.request("ph_send_batch", params, options);
  }

  /** `ph_flush`: deliver what can be delivered within `timeout` seconds (default 10). */
  flush(options: CallOptions & { timeout?: number } = {}): Promise<FlushResult> {
    const timeoutS = options.timeout ?? DEFAULT_FLUSH_TIMEOUT_S;
    const timeoutMs =
      options.timeoutMs ?? Math.max(this.#requestTimeoutMs, timeoutS * 1000 + FLUSH_TIMEOUT_MARGIN_MS);
    const params = options.timeout === undefined ? {} : { timeout: options.timeout };
    return this.request("ph_flush", params, { timeoutMs });
  }

  /** `ph_status`: queue depth, counters and delivery state. */
  status(options?: CallOptions): Promise<StatusResult> {
    return this.request("ph_status", undefined, options);
  }

  /** `ph_set_opt_out`: persist the user's choice; `true` purges the queue. */
  setOptOut(optOut: boolean, options?: CallOptions): Promise<OptOutResult> {
    return this.request("ph_set_opt_out", { opt_out: optOut }, options);
  }

  /** `ping`: liveness and version. */
  ping(options?: CallOptions): Promise<PingResult> {
    return this.request("ping", undefined, options);
  }

  /**
   * `shutdown`: the sidecar answers, then exits 0; no restart follows. Queued events stay on
   * disk for the next start. Use {@link close} to also flush captured events and wait for the exit.
   */
  async shutdown(options?: CallOptions): Promise<ShutdownResult> {
    if (this.#state === "starting" && this.#starting !== null) {
      await this.#starting.catch(() => {});
    }
    const proc = this.#proc;
    if (this.#state !== "running" || proc === null || proc.child === null) {
      throw new SidecarUnavailableError(`shutdown: the sidecar is not running (${this.#state})`, this.#state);
    }
    proc.expectExit = true;
    this.#stopRequested = true;
    this.#setState("stopping");
    try {
      const timeoutMs = options?.timeoutMs ?? this.#requestTimeoutMs;
      return (await this.#send(proc, "shutdown", undefined, timeoutMs)) as ShutdownResult;
    } catch (error) {
      if (!proc.exited && this.#proc === proc) {
        proc.expectExit = false;
        this.#stopRequested = false;
        this.#setState("running");
      }
      throw error;
    }
  }

  /**
   * Stop for good: send captured events still queued in the webview, ask the sidecar to shut
   * down, wait for it to exit (killing it after `timeoutMs`), and cancel any pending restart.
   * Idempotent.
   */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    this.#cancelRestart();
    const wasRunning = this.#state === "running";
    this.#stopRequested = true;
    if (this.#capture !== undefined && wasRunning) {
      await withTimeout(this.#capture.flush(), timeoutMs);
    }
    // Whatever could not be sent is reported to the capture's onDrop; a later capture() starts afresh.
    this.#capture?.dispose();
    this.#capture = undefined;
    if (this.#state === "starting" && this.#starting !== null) {
      await this.#starting.catch(() => {});
    }
    const stopping = this.#beginStopping();
    if (stopping === null) {
      return;
    }
    const { proc, exited } = stopping;
    if (proc.child !== null) {
      this.#send(proc, "shutdown", undefined, timeoutMs).catch(() => {});
    }
    if (!(await withTimeout(exited, timeoutMs))) {
      this.#log(`the sidecar did not exit within ${timeoutMs} ms of shutdown; killing it`);
      await this.#killProc(proc);
      await withTimeout(exited, timeoutMs);
    }
  }

  /** Kill the process now (the plugin sends SIGKILL); no restart follows. */
  async kill(): Promise<void> {
    this.#cancelRestart();
    this.#stopRequested = true;
    const stopping = this.#beginStopping();
    if (stopping === null) {
      return;
    }
    await this.#killProc(stopping.proc);
    await withTimeout(stopping.exited, DEFAULT_CLOSE_TIMEOUT_MS);
  }

  /**
   * The common start of close() and kill(): with no live process, the state becomes "stopped"
   * and null is returned; otherwise its exit is expected and awaited from here on.
   */
  #beginStopping(): { proc: Proc; exited: Promise<void> } | null {
    const proc = this.#proc;
    if (proc === null || proc.exited) {
      this.#setState("stopped");
      return null;
    }
    proc.expectExit = true;
    this.#setState("stopping");
    return { proc, exited: this.#waitForExit(proc) };
  }

  /** The batching queue behind {@link capture}, created on first use with the `capture` options. */
  get captureQueue(): TelemetryCapture {
    this.#capture ??= new TelemetryCapture(this, this.#captureOptions);
    return this.#capture;
  }

  /** Queue an event in the webview; it is sent in a batch (see {@link TelemetryCapture.capture}). */
  capture(event: string, properties?: Record<string, unknown>): void {
    this.captureQueue.capture(event, properties);
  }

  /** Set the `distinct_id` of events captured from now on (see {@link TelemetryCapture.identify}). */
  identify(distinctId: string, userProperties?: Record<string, unknown>): void {
    this.captureQueue.identify(distinctId, userProperties);
  }

  // ---------------------------------------------------------------- process lifecycle

  #spawn(): Promise<void> {
    const proc: Proc = {
      child: null,
      pid: null,
      exited: false,
      expectExit: false,
      writes: Promise.resolve(),
      stdout: new LineDecoder(),
      stderr: new LineDecoder(),
      startedAt: Date.now(),
    };
    this.#proc = proc;
    this.#setState("starting");
    const command = Command.sidecar(this.#program, this.#args, this.#spawnOptions);
    command.stdout.on("data", (chunk) => this.#onStdout(proc.stdout.push(chunk).lines));
    command.stderr.on("data", (chunk) => this.#onStderr(proc.stderr.push(chunk).lines));
    command.on("close", (payload) => this.#onExit(proc, { code: payload.code, signal: payload.signal }));
    command.on("error", (message) => this.#onProcessError(proc, message));

    const starting = command.spawn().then(
      (child) => {
        proc.child = child;
        proc.pid = child.pid;
        if (this.#starting === starting) this.#starting = null;
        if (proc.exited) {
          // It ended before the spawn call returned; #onExit has already dealt with it.
          return;
        }
        if (this.#proc !== proc) {
          void child.kill().catch(() => {});
          return;
        }
        this.#setState("running");
        this.#events.emit("spawn", { pid: child.pid, restarts: this.#restarts });
      },
      (error: unknown) => {
        if (this.#starting === starting) this.#starting = null;
        proc.exited = true;
        if (this.#proc === proc) this.#proc = null;
        throw new SidecarUnavailableError(`could not spawn ${this.#program}: ${errorText(error)}`, "starting", {
          cause: error,
        });
      },
    );
    this.#starting = starting;
    return starting;
  }

  #onExit(proc: Proc, status: ExitStatus): void {
    if (proc.exited) return;
    this.#onStdout(proc.stdout.end());
    this.#onStderr(proc.stderr.end());
    proc.exited = true;
    const current = this.#proc === proc;
    if (current) this.#proc = null;
    const expected = proc.expectExit;
    const how = describeExit(status);
    this.#rejectPending(new SidecarClosedError(`the sidecar ${how} before answering`, status));
    if (!expected) this.#log(`the sidecar ${how}`);
    this.#events.emit("exit", { ...status, pid: proc.pid ?? -1, expected });
    const waiters = this.#exitWaiters;
    this.#exitWaiters = [];
    for (const wake of waiters) wake();
    if (!current) return;
    if (expected || this.#state === "stopping" || this.#state === "stopped") {
      this.#setState("stopped");
      return;
    }
    if (status.code === EXIT_USAGE) {
      // A bad option or value (contract: one line on stderr, exit 2): restarting cannot help.
      this.#setState("stopped");
      const error = new SidecarClosedError(`the sidecar refused its arguments (exit 2); see its stderr`, status);
      this.#events.emit("error", { error, willRetry: false });
      return;
    }
    this.#scheduleRestart(proc.startedAt);
  }

  #onProcessError(proc: Proc, message: string): void {
    this.#log(`the shell plugin reported an error: ${message}`);
    if (proc.exited) return;
    // The plugin sends `Error` when it cannot wait on the child or decode its output; no
    // trustworthy answer can follow, so fail the calls and end the process.
    this.#rejectPending(new SidecarClosedError(`the sidecar failed: ${message}`));
    void this.#killProc(proc).finally(() => {
      // Without a `Terminated` event the process counts as ended once killed.
      this.#onExit(proc, { code: null, signal: null });
    });
  }

  #scheduleRestart(startedAt: number): void {
    const policy = this.#restart;
    if (policy === null || this.#stopRequested) {
      this.#setState("stopped");
      return;
    }
    if (Date.now() - startedAt >= policy.stableAfterMs) this.#restartAttempt = 0;
    if (this.#restartAttempt >= policy.maxAttempts) {
      this.#log(`giving up after ${this.#restartAttempt} restarts`);
      this.#setState("stopped");
      return;
    }
    const nominal = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.factor ** this.#restartAttempt);
    const jitter = Math.min(1, Math.max(0, policy.jitter));
    const delayMs = Math.round(nominal * (1 - jitter * Math.random()));
    this.#restartAttempt += 1;
    this.#setState("restarting");
    this.#events.emit("restart", { attempt: this.#restartAttempt, delayMs });
    this.#log(`restarting the sidecar in ${delayMs} ms (attempt ${this.#restartAttempt})`);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      this.#restarts += 1;
      const startedAt = Date.now();
      this.#spawn().catch((error: unknown) => {
        this.#log(errorText(error));
        this.#scheduleRestart(startedAt);
        this.#events.emit("error", { error, willRetry: this.#state === "restarting" });
      });
    }, delayMs);
  }

  #cancelRestart(): void {
    if (this.#restartTimer !== undefined) {
      clearTimeout(this.#restartTimer);
      this.#restartTimer = undefined;
    }
  }

  async #killProc(proc: Proc): Promise<void> {
    if (proc.child === null || proc.exited) return;
    try {
      await proc.child.kill();
    } catch (error) {
      this.#log(`kill failed: ${errorText(error)}`);
    }
  }

  #waitForExit(proc: Proc): Promise<void> {
    if (proc.exited) return Promise.resolve();
    return new Promise((resolve) => this.#exitWaiters.push(resolve));
  }

  #setState(state: SidecarState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#events.emit("state", state);
  }

  // ---------------------------------------------------------------- JSON-RPC

  #send(proc: Proc, method: string, params: unknown, timeoutMs: number): Promise<unknown> {
    const child = proc.child;
    if (child === null) {
      return Promise.reject(new SidecarUnavailableError(`${method}: the sidecar is not running`, this.#state));
    }
    const id = this.#nextId++;
    const message: Record<string, unknown> = { jsonrpc: "2.0", id, method };
    if (params !== undefined) message.params = params;
    // JSON.stringify escapes every control character, so the line holds no raw newline.
    const line = `${JSON.stringify(message)}\n`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.#pending.delete(id)) reject(new SidecarTimeoutError(method, timeoutMs));
      }, timeoutMs);
      this.#pending.set(id, { method, resolve, reject, timer });
      // Writes go out one after another, in call order.
      proc.writes = proc.writes.then(
        () => child.write(line),
      ).catch((error: unknown) => {
        const pending = this.#pending.get(id);
        if (pending === undefined) return;
        this.#pending.delete(id);
        clearTimeout(pending.timer);
        pending.reject(new SidecarClosedError(`${method}: could not write to the sidecar: ${errorText(error)}`));
      });
    });
  }

  #onStdout(lines: string[]): void {
    for (const line of lines) {
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        this.#log(`ignoring a stdout line that is not JSON: ${truncate(line)}`);
        continue;
      }
      for (const item of Array.isArray(message) ? message : [message]) this.#onResponse(item, line);
    }
  }

  #onResponse(item: unknown, line: string): void {
    if (!isObject(item) || item.jsonrpc !== "2.0") {
      this.#log(`ignoring a stdout line that is not a JSON-RPC response: ${truncate(line)}`);
      return;
    }
    const id = item.id;
    const pending = typeof id === "number" ? this.#pending.get(id) : undefined;
    if (pending === undefined) {
      const what = isObject(item.error) ? `error ${JSON.stringify(item.error)}` : "answer";
      this.#log(`ignoring an ${what} for id ${JSON.stringify(id)} (no such call waiting)`);
      return;
    }
    this.#pending.delete(id as number);
    clearTimeout(pending.timer);
    if ("error" in item) {
      const error = isObject(item.error) ? item.error : {};
      const code = typeof error.code === "number" ? error.code : 0;
      const message = typeof error.message === "string" ? error.message : "unknown error";
      pending.reject(new SidecarRpcError(pending.method, code, message, error.data));
    } else {
      pending.resolve(item.result);
    }
  }

  #onStderr(lines: string[]): void {
    for (const line of lines) this.#logger(line, "stderr");
  }

  #rejectPending(error: Error): void {
    const calls = [...this.#pending.values()];
    this.#pending.clear();
    for (const call of calls) {
      clearTimeout(call.timer);
      call.reject(error);
    }
  }

  #log(message: string): void {
    this.#logger(message, "client");
  }
}

/** The spawn arguments for the given options, in the order the README documents them. */
export function buildArgs(options: TelemetrySidecarOptions): string[] {
  const args: string[] = [];
  if (options.dataDir !== undefined) args.push("--data-dir", options.dataDir);
  if (options.host !== undefined) args.push("--host", options.host);
  if (options.apiKey !== undefined) args.push("--api-key", options.apiKey);
  if (options.logLevel !== undefined) args.push("--log-level", options.logLevel);
  if (options.args !== undefined) args.push(...options.args);
  return args;
}

function describeExit(status: ExitStatus): string {
  if (status.signal !== null) return `was killed by signal ${status.signal}`;
  if (status.code !== null) return `exited with code ${status.code}`;
  return "ended";
}

/** Resolve to true when `promise` settles within `ms`, false otherwise. */
function withTimeout(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    promise.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(true);
      },
    );
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function truncate(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
