/**
 * The posthog-js bridge (`telemetry-sidecar-client/posthog`): posthog-js builds the events, the
 * sidecar makes them durable and delivers them.
 *
 * posthog-js runs its `before_send` hooks on every event after building it and before any
 * request; an event a hook turns into `null` is not sent by posthog-js at all. The hook made here
 * converts each event to a `/batch/` event (same `uuid`, `timestamp`, `distinct_id` and
 * properties), queues it in the webview with a {@link TelemetryCapture} (one queue per project
 * token, so one `ph_send_batch` call carries one `api_key`), and returns `null`.
 *
 * posthog-js keeps what the sidecar should not or cannot take:
 * - `$snapshot` (session replay; another endpoint, large) and any event named in `leaveToPostHog`;
 * - every event while the sidecar is stopped for good (closed, could not be started, exit 2,
 *   restarts given up), and events the hook fails on (an internal error is never thrown into
 *   posthog-js, which would drop the event);
 * - with a posthog-js instance to give them to ({@link connectPostHog} passes it), events that
 *   were queued in the webview when the sidecar stopped, that the sidecar refused, that overflowed
 *   the webview queue or were still queued at `dispose()`: they are captured again through
 *   `posthog.capture()` with their `uuid` and `timestamp`, and the hook restores their original
 *   properties, so posthog-js sends them itself as they were.
 *
 * This module imports only types from posthog-js; the package's main entry does not import it.
 */

import type { BeforeSendFn, CaptureOptions as PostHogCaptureOptions, CaptureResult, PostHog, Properties } from "posthog-js";

import {
  TelemetryCapture,
  type BatchSink,
  type CaptureFlushResult,
  type CaptureOptions,
  type DropReason,
} from "./capture.js";
import { isRetryable } from "./errors.js";
import type { PostHogEvent } from "./types.js";

/** Session-replay events: posthog-js sends them to its own endpoint. */
export const SNAPSHOT_EVENT = "$snapshot";

/** The sink state in which nothing can be sent until the app starts the sidecar again. */
const STOPPED = "stopped";

/** Receives the bridge's reports: internal errors and switches between the sidecar and posthog-js. */
export type BridgeLogger = (message: string, error?: unknown) => void;

/** The part of a posthog-js instance the hook hands events back to. */
export type PostHogCapture = Pick<PostHog, "capture">;

/** Options of {@link sidecarBeforeSend}. */
export interface SidecarBeforeSendOptions
  extends Pick<
    CaptureOptions,
    "flushAt" | "flushIntervalMs" | "maxQueueSize" | "maxBatchSize" | "retryDelayMs" | "maxRetryDelayMs" | "flushOnPageHide"
  > {
  /**
   * Told about events that are lost: neither the sidecar nor posthog-js took them (with no
   * `posthog` to hand them back to, every event the sidecar path gives up on; with one, those
   * posthog-js declined, e.g. after an opt-out).
   */
  onDrop?: (events: PostHogEvent[], reason: DropReason) => void;
  /** More event names that posthog-js sends itself, besides `$snapshot`. */
  leaveToPostHog?: Iterable<string>;
  /**
   * The posthog-js instance to give events back to when the sidecar cannot take them (see the
   * module comment); without it they go to `onDrop`. {@link connectPostHog} sets it.
   */
  posthog?: PostHogCapture;
  /** Receives internal errors and the switches to and from posthog-js. Default: `console.warn`. */
  logger?: BridgeLogger;
}

/** A posthog-js `before_send` function that queues events for the sidecar, with its queues' controls. */
export interface SidecarBeforeSend extends BeforeSendFn {
  /** Events waiting in the webview queues. */
  readonly pending: number;
  /** Send what waits in the webview queues now (see {@link TelemetryCapture.flush}). */
  flush(): Promise<CaptureFlushResult>;
  /** Stop the queues; events still waiting go back to posthog-js (or to `onDrop`). Idempotent. */
  dispose(): void;
}

/** A converted event and the project key its batch goes with. */
export interface BatchEvent {
  event: PostHogEvent;
  /** `properties.token`; undefined when absent or empty (the sidecar's `--api-key` applies). */
  apiKey: string | undefined;
}

/**
 * posthog-js's `CaptureResult` as a `/batch/` event: `uuid`, `event`, `$set`, `$set_once`,
 * `$unset` and any other top-level field kept; `distinct_id` from `properties.distinct_id`;
 * `timestamp` (a `Date`) as RFC 3339 UTC with milliseconds; every property kept as is; the
 * token as the batch's api key. Throws `TypeError` for an event it cannot express (no usable
 * `distinct_id`, an invalid timestamp).
 */
export function toBatchEvent(result: CaptureResult): BatchEvent {
  const properties: unknown = result.properties;
  if (typeof properties !== "object" || properties === null || Array.isArray(properties)) {
    throw new TypeError(`event ${JSON.stringify(result.event)} has no properties object`);
  }
  const props = properties as Record<string, unknown>;
  const distinctId = props.distinct_id;
  if (!((typeof distinctId === "string" && distinctId !== "") || (typeof distinctId === "number" && Number.isFinite(distinctId)))) {
    throw new TypeError(`event ${JSON.stringify(result.event)} has no usable properties.distinct_id`);
  }
  const { timestamp, ...rest } = result as CaptureResult & Record<string, unknown>;
  const event: PostHogEvent = { ...rest, event: result.event, distinct_id: distinctId, properties: { ...props } };
  const wireTimestamp = toWireTimestamp(timestamp);
  if (wireTimestamp !== undefined) event.timestamp = wireTimestamp;
  const token = props.token;
  return { event, apiKey: typeof token === "string" && token !== "" ? token : undefined };
}

/** A `Date` as `2026-12-03T08:15:17.123Z`; a string is kept; undefined stays undefined. */
function toWireTimestamp(timestamp: unknown): string | undefined {
  if (timestamp === undefined || timestamp === null) return undefined;
  if (typeof timestamp === "string") return timestamp;
  if (timestamp instanceof Date) {
    if (Number.isNaN(timestamp.getTime())) throw new TypeError("the event's timestamp is an invalid Date");
    return timestamp.toISOString();
  }
  throw new TypeError(`the event's timestamp is neither a Date nor a string: ${typeof timestamp}`);
}

/**
 * The `/batch/` event back as posthog-js `capture()` arguments: its properties, and options
 * that keep its `uuid`, `timestamp` and person properties.
 */
function toCaptureArguments(event: PostHogEvent): { properties: Properties; options: PostHogCaptureOptions } {
  const options: PostHogCaptureOptions = { skip_client_rate_limiting: true };
  if (typeof event.uuid === "string") options.uuid = event.uuid;
  if (typeof event.timestamp === "string") {
    const timestamp = new Date(event.timestamp);
    if (!Number.isNaN(timestamp.getTime())) options.timestamp = timestamp;
  }
  if (isRecord(event.$set)) options.$set = event.$set as Properties;
  if (isRecord(event.$set_once)) options.$set_once = event.$set_once as Properties;
  if (Array.isArray(event.$unset)) options.$unset = event.$unset as string[];
  // The event came from captureException() the first time; this keeps posthog-js from warning.
  if (event.event === "$exception") options._originatedFromCaptureException = true;
  return { properties: (event.properties ?? {}) as Properties, options };
}

/**
 * The event posthog-js built again from a handed-back one, with the original's properties and
 * person properties, so what posthog-js sends is what the sidecar would have sent.
 */
function restoreOriginal(result: CaptureResult, original: PostHogEvent): CaptureResult {
  result.properties = { ...(original.properties ?? {}) } as Properties;
  for (const field of ["$set", "$set_once", "$unset"] as const) {
    if (original[field] === undefined) delete result[field];
    else (result as unknown as Record<string, unknown>)[field] = original[field];
  }
  return result;
}

/** Raised by the bridge's sink wrapper: the sidecar is stopped, the batch goes back to posthog-js. */
class SidecarStoppedError extends Error {
  override name = "SidecarStoppedError";
}

/** The `state` event of a sink that has a `state` (see {@link BatchSink.state}). */
interface StateEvents {
  on(name: "state", listener: (state: string) => void): () => void;
}

/** What {@link Bridge} needs beyond the public options. */
interface BridgeInternals {
  /** Awaited before each batch goes to the sidecar (the opt-out decision is applied first). */
  beforeBatch?: () => Promise<void>;
}

/** The state behind one {@link SidecarBeforeSend}. */
class Bridge {
  readonly #sink: BatchSink;
  readonly #guarded: BatchSink;
  readonly #captureOptions: CaptureOptions;
  readonly #leave: Set<string>;
  readonly #posthog: PostHogCapture | undefined;
  readonly #onDrop: (events: PostHogEvent[], reason: DropReason) => void;
  readonly #log: BridgeLogger;
  readonly #beforeBatch: () => Promise<void>;
  /** One queue per project token ("" for events without one). */
  readonly #queues = new Map<string, TelemetryCapture>();
  /**
   * Events being captured again through posthog-js, by uuid; the hook gives posthog-js back the
   * original's properties (`capture()` adds its own, e.g. `$event_time_override_provided`).
   */
  readonly #returning = new Map<string, PostHogEvent>();
  readonly #cleanups: Array<() => void> = [];
  /** Invariant: true from the report of a stop until the first event the sidecar takes after it. */
  #fallingBack = false;
  #disposed = false;

  constructor(sink: BatchSink, options: SidecarBeforeSendOptions, internals: BridgeInternals) {
    this.#sink = sink;
    this.#posthog = options.posthog;
    this.#onDrop = options.onDrop ?? (() => {});
    this.#log = options.logger ?? defaultLogger;
    this.#beforeBatch = internals.beforeBatch ?? (() => Promise.resolve());
    this.#leave = new Set([SNAPSHOT_EVENT, ...(options.leaveToPostHog ?? [])]);
    const captureOptions: CaptureOptions = { onDrop: (events, reason) => this.#giveUp(events, reason) };
    for (const key of [
      "flushAt",
      "flushIntervalMs",
      "maxQueueSize",
      "maxBatchSize",
      "retryDelayMs",
      "maxRetryDelayMs",
      "flushOnPageHide",
    ] as const) {
      if (options[key] !== undefined) Object.assign(captureOptions, { [key]: options[key] });
    }
    this.#captureOptions = captureOptions;
    this.#guarded = {
      sendBatch: (batch, sendOptions) => this.#sendBatch(batch, sendOptions),
      on: (name, listener) => sink.on(name, listener),
    };
    if ("state" in sink) {
      this.#cleanups.push(
        (sink as BatchSink & StateEvents).on("state", (state) => {
          if (state === STOPPED) this.#onStopped();
        }),
      );
    }
  }

  /** The `before_send` hook itself. Never throws. */
  beforeSend(result: CaptureResult): CaptureResult | null {
    try {
      if (result === null || typeof result !== "object") return result;
      const original = this.#returning.get(result.uuid);
      if (original !== undefined) return restoreOriginal(result, original);
      if (this.#leave.has(result.event)) return result;
      if (this.#disposed) return result;
      if (this.#sinkStopped()) {
        this.#onStopped();
        return result;
      }
      if (this.#fallingBack) {
        this.#fallingBack = false;
        this.#log("the sidecar is back: posthog-js events go through it again");
      }
      const { event, apiKey } = toBatchEvent(result);
      this.#queue(apiKey).enqueue(event);
      return null;
    } catch (error) {
      this.#log(`could not queue ${describeEvent(result)} for the sidecar; posthog-js sends it itself`, error);
      return result;
    }
  }

  get pending(): number {
    let pending = 0;
    for (const queue of this.#queues.values()) pending += queue.pending;
    return pending;
  }

  async flush(): Promise<CaptureFlushResult> {
    const results = await Promise.all([...this.#queues.values()].map((queue) => queue.flush()));
    return results.reduce((sum, r) => ({ accepted: sum.accepted + r.accepted, pending: sum.pending + r.pending }), {
      accepted: 0,
      pending: 0,
    });
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const cleanup of this.#cleanups.splice(0)) cleanup();
    for (const queue of this.#queues.values()) queue.dispose();
    this.#queues.clear();
  }

  #queue(apiKey: string | undefined): TelemetryCapture {
    const key = apiKey ?? "";
    let queue = this.#queues.get(key);
    if (queue === undefined) {
      queue = new TelemetryCapture(
        this.#guarded,
        apiKey === undefined ? this.#captureOptions : { ...this.#captureOptions, apiKey },
      );
      this.#queues.set(key, queue);
    }
    return queue;
  }

  #sinkStopped(): boolean {
    return this.#sink.state === STOPPED;
  }

  /** The sink is stopped: say so once, and send the waiting events on (back to posthog-js). */
  #onStopped(): void {
    if (this.#disposed) return;
    this.#noteStopped();
    for (const queue of this.#queues.values()) {
      if (queue.pending > 0) void queue.flush();
    }
  }

  /** Report the switch to posthog-js, once per stop. */
  #noteStopped(): void {
    if (this.#fallingBack) return;
    this.#fallingBack = true;
    this.#log("the sidecar is stopped (closed or could not start): posthog-js sends events itself until it is started again");
  }

  async #sendBatch(batch: PostHogEvent[], options?: { apiKey?: string }) {
    await this.#beforeBatch();
    if (this.#sinkStopped()) throw new SidecarStoppedError("the sidecar is stopped");
    try {
      return await this.#sink.sendBatch(batch, options);
    } catch (error) {
      // A call that failed because the process went away for good: no restart will send it.
      if (isRetryable(error) && this.#sinkStopped()) {
        throw new SidecarStoppedError("the sidecar stopped", { cause: error });
      }
      throw error;
    }
  }

  /** Events the sidecar path gives up on: back to posthog-js when there is one, else onDrop. */
  #giveUp(events: PostHogEvent[], reason: DropReason): void {
    const posthog = this.#posthog;
    if (posthog === undefined) {
      this.#drop(events, reason);
      return;
    }
    if (reason.kind === "failed" && reason.error instanceof SidecarStoppedError) {
      this.#noteStopped();
    } else {
      this.#log(`${events.length} event(s) not taken by the sidecar (${describeReason(reason)}); posthog-js sends them itself`);
    }
    if (reason.kind === "disposed") {
      // At once, while the hook is still installed to restore their properties.
      this.#handBack(posthog, events, reason);
    } else {
      // Not inside the hook's own call stack (an overflow happens within before_send): posthog-js
      // gets them back once the current capture has finished.
      queueMicrotask(() => this.#handBack(posthog, events, reason));
    }
  }

  #handBack(posthog: PostHogCapture, events: PostHogEvent[], reason: DropReason): void {
    const declined: PostHogEvent[] = [];
    for (const event of events) {
      const uuid = typeof event.uuid === "string" ? event.uuid : undefined;
      if (uuid !== undefined) this.#returning.set(uuid, event);
      let taken = false;
      try {
        const { properties, options } = toCaptureArguments(event);
        taken = posthog.capture(event.event, properties, options) !== undefined;
      } catch (error) {
        this.#log(`posthog.capture() failed for ${JSON.stringify(event.event)}`, error);
      } finally {
        if (uuid !== undefined) this.#returning.delete(uuid);
      }
      if (!taken) declined.push(event);
    }
    if (declined.length > 0) this.#drop(declined, reason);
  }

  #drop(events: PostHogEvent[], reason: DropReason): void {
    try {
      this.#onDrop(events, reason);
    } catch (error) {
      this.#log("onDrop threw", error);
    }
  }
}

/**
 * A posthog-js `before_send` function that queues every event (but `$snapshot` and
 * `leaveToPostHog`) for the sidecar and returns `null`, so posthog-js does not send it. `sink`
 * is a `TelemetrySidecar` or anything with the {@link BatchSink} shape. See the module comment
 * for what stays with posthog-js. Use {@link connectPostHog} to also mirror opt-out.
 *
 * ```ts
 * posthog.init("phc_...", { before_send: sidecarBeforeSend(sidecar, { posthog }) });
 * ```
 */
export function sidecarBeforeSend(sink: BatchSink, options: SidecarBeforeSendOptions = {}): SidecarBeforeSend {
  return makeHook(new Bridge(sink, options, {}));
}

function makeHook(bridge: Bridge): SidecarBeforeSend {
  const hook = ((result: CaptureResult) => bridge.beforeSend(result)) as SidecarBeforeSend;
  Object.defineProperties(hook, {
    pending: { get: () => bridge.pending, enumerable: true },
    flush: { value: () => bridge.flush() },
    dispose: { value: () => bridge.dispose() },
  });
  return hook;
}

/** The part of a posthog-js instance {@link connectPostHog} uses. */
export type PostHogClient = Pick<
  PostHog,
  "capture" | "config" | "set_config" | "opt_out_capturing" | "opt_in_capturing" | "clear_opt_in_out_capturing" | "is_capturing"
>;

/** A sink that also persists the opt-out decision (`ph_set_opt_out`); a `TelemetrySidecar` is one. */
export interface OptOutSink extends BatchSink {
  setOptOut(optOut: boolean): Promise<unknown>;
}

/** Options of {@link connectPostHog}: those of {@link sidecarBeforeSend} but `posthog`. */
export type ConnectPostHogOptions = Omit<SidecarBeforeSendOptions, "posthog">;

/** What {@link connectPostHog} returns. */
export interface PostHogConnection {
  /** The hook it installed. */
  readonly beforeSend: SidecarBeforeSend;
  /** Send what waits in the webview queues now. */
  flush(): Promise<CaptureFlushResult>;
  /**
   * Apply posthog-js's current decision to the sidecar now (`ph_set_opt_out(!posthog.is_capturing())`).
   * It happens by itself after `opt_out_capturing()`, `opt_in_capturing()`,
   * `clear_opt_in_out_capturing()`, at each (re)start of the sidecar and before each batch; call it
   * after changing consent some other way (e.g. `set_config`) to purge the disk queue at once.
   * Resolves when the sidecar has applied it, or failed to (reported to the logger; a sidecar
   * that is away gets it when it is back).
   */
  syncOptOut(): Promise<void>;
  /** Remove the hook and the opt-out wrappers; events still queued go back to posthog-js. */
  dispose(): void;
}

/**
 * Route an initialised posthog-js instance through the sidecar: installs
 * {@link sidecarBeforeSend} as the last of posthog-js's `before_send` hooks (events go back to
 * this instance when the sidecar cannot take them), and keeps opt-out one decision: the
 * sidecar is opted out (`ph_set_opt_out`, which purges its disk queue) exactly when posthog-js
 * does not capture. Call it right after `posthog.init()` (or in its `loaded` callback) so the
 * first `$pageview`, captured a tick after init, goes through it too.
 */
export function connectPostHog(
  posthog: PostHogClient,
  sidecar: OptOutSink,
  options: ConnectPostHogOptions = {},
): PostHogConnection {
  const log = options.logger ?? defaultLogger;
  const mirror = new OptOutMirror(posthog, sidecar, log);
  const bridge = new Bridge(sidecar, { ...options, posthog }, { beforeBatch: () => mirror.settled() });
  const hook = makeHook(bridge);

  const current = posthog.config.before_send;
  const others = current === undefined || current === null ? [] : Array.isArray(current) ? [...current] : [current];
  posthog.set_config({ before_send: [...others, hook] });

  const restoreMethods = [
    wrapMethod(posthog, "opt_out_capturing", () => void mirror.sync()),
    wrapMethod(posthog, "opt_in_capturing", () => void mirror.sync()),
    wrapMethod(posthog, "clear_opt_in_out_capturing", () => void mirror.sync()),
  ];
  // Registered before any queue exists, so a new process gets the decision before the batches waiting for it.
  const offSpawn = sidecar.on("spawn", () => void mirror.sync({ force: true }));
  void mirror.sync({ force: true });

  let disposed = false;
  return {
    beforeSend: hook,
    flush: () => hook.flush(),
    syncOptOut: () => mirror.sync(),
    dispose: () => {
      if (disposed) return;
      disposed = true;
      offSpawn();
      for (const restore of restoreMethods) restore();
      // First, while the hook is installed: the events it still holds go back to posthog-js.
      hook.dispose();
      const hooks = posthog.config.before_send;
      if (Array.isArray(hooks)) {
        posthog.set_config({ before_send: hooks.filter((fn) => fn !== hook) });
      } else if (hooks === hook) {
        posthog.set_config({ before_send: [] });
      }
    },
  };
}

/**
 * Mirrors posthog-js's capturing decision into the sidecar's `ph_set_opt_out`, one call at a time
 * and in order.
 */
class OptOutMirror {
  readonly #posthog: Pick<PostHog, "is_capturing">;
  readonly #sidecar: OptOutSink;
  readonly #log: BridgeLogger;
  /** The value the running sidecar confirmed; undefined when unknown (not yet, failed, new process). */
  #applied: boolean | undefined;
  /** Invariant: settles after every call issued so far has settled; never rejects. */
  #chain: Promise<void> = Promise.resolve();

  constructor(posthog: Pick<PostHog, "is_capturing">, sidecar: OptOutSink, log: BridgeLogger) {
    this.#posthog = posthog;
    this.#sidecar = sidecar;
    this.#log = log;
  }

  /**
   * Send posthog-js's current decision when it differs from what the sidecar last confirmed (or
   * always, with `force`). Resolves once it has been applied or has failed.
   */
  sync(options: { force?: boolean } = {}): Promise<void> {
    let optOut: boolean;
    try {
      optOut = !this.#posthog.is_capturing();
    } catch (error) {
      this.#log("could not read posthog-js's opt-out state", error);
      return this.#chain;
    }
    if (options.force === true) this.#applied = undefined;
    else if (optOut === this.#applied) return this.#chain;
    this.#chain = this.#chain.then(() => this.#apply(optOut));
    return this.#chain;
  }

  /**
   * Resolves once the current decision is applied (or failed), a microtask later at the least, so
   * that an opt-in made in the same task as the capture that calls this is sent first.
   */
  async settled(): Promise<void> {
    await Promise.resolve();
    await this.sync();
  }

  async #apply(optOut: boolean): Promise<void> {
    if (optOut === this.#applied) return;
    try {
      await this.#sidecar.setOptOut(optOut);
      this.#applied = optOut;
    } catch (error) {
      this.#applied = undefined;
      // A sidecar that is away gets the decision at its next start (the spawn listener).
      if (!isRetryable(error)) this.#log(`ph_set_opt_out(${optOut}) failed`, error);
    }
  }
}

/**
 * Wrap `posthog[name]` on the instance so `after` runs once the original returned; returns the
 * function that puts the original back.
 */
function wrapMethod<K extends "opt_out_capturing" | "opt_in_capturing" | "clear_opt_in_out_capturing">(
  posthog: PostHogClient,
  name: K,
  after: () => void,
): () => void {
  const hadOwn = Object.prototype.hasOwnProperty.call(posthog, name);
  const original = posthog[name] as unknown as (...args: unknown[]) => unknown;
  const wrapper = function (this: unknown, ...args: unknown[]): unknown {
    const result = original.apply(this, args);
    try {
      after();
    } catch {
      // after() reports its own failures; posthog-js's call has already done its work.
    }
    return result;
  };
  (posthog as Record<K, unknown>)[name] = wrapper;
  return () => {
    if (posthog[name] !== wrapper) return;
    if (hadOwn) (posthog as Record<K, unknown>)[name] = original;
    else delete (posthog as Partial<Record<K, unknown>>)[name];
  };
}

function defaultLogger(message: string, error?: unknown): void {
  if (error === undefined) console.warn(`[telemetry-sidecar-client/posthog] ${message}`);
  else console.warn(`[telemetry-sidecar-client/posthog] ${message}`, error);
}

function describeEvent(result: unknown): string {
  if (typeof result === "object" && result !== null && "event" in result) {
    return JSON.stringify((result as { event: unknown }).event) ?? "an event";
  }
  return "an event";
}

function describeReason(reason: DropReason): string {
  switch (reason.kind) {
    case "rejected":
      return `rejected: ${reason.error}`;
    case "failed":
      return `failed: ${reason.error instanceof Error ? reason.error.message : String(reason.error)}`;
    case "overflow":
      return "the webview queue overflowed";
    case "disposed":
      return "the bridge was disposed";
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
