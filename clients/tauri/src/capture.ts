/**
 * `TelemetryCapture`: queue events in the webview and hand them to the sidecar in batches.
 *
 * A batch goes out through `ph_send_batch` when `flushAt` events are waiting, `flushIntervalMs`
 * after the first waiting event, when the page is hidden (`visibilitychange` to hidden,
 * `pagehide`), or on `flush()`. A batch that cannot be sent because the sidecar is away
 * (restarting, timed out, storage unavailable) goes back to the head of the queue and is sent
 * again as soon as the sidecar is back, or after a backoff. Each event gets its `uuid` and
 * `timestamp` when captured, so a batch sent twice (its answer lost in a crash) is deduplicated
 * by PostHog rather than counted twice.
 */

import { isRetryable } from "./errors.js";
import type { PostHogEvent, SendBatchResult } from "./types.js";
import { uuidv7 } from "./uuid.js";

/** What the capture queue needs from the client: a way to send, and word of a (re)start. */
export interface BatchSink {
  sendBatch(batch: PostHogEvent[], options?: { apiKey?: string }): Promise<SendBatchResult>;
  on(name: "spawn", listener: (payload: { pid: number }) => void): () => void;
  /**
   * The sink's lifecycle state, as `TelemetrySidecar.state` names it; `"stopped"` means no
   * process is running and none is coming until the app starts one (closed, could not be started,
   * exit code 2, restarts given up). A sink that has it also emits `"state"` through `on` when it
   * changes, as `TelemetrySidecar` does. Optional: a sink without it is taken to come back after
   * any failure.
   */
  readonly state?: string;
}

/** Why events left the queue without being accepted. */
export type DropReason =
  /** The sidecar refused the event (validation); `error` is its reason. */
  | { kind: "rejected"; error: string }
  /** The call failed in a way that sending again cannot fix (e.g. no API key: -32602). */
  | { kind: "failed"; error: unknown }
  /** The webview queue was full; the oldest events went. */
  | { kind: "overflow" }
  /** The queue was disposed (e.g. by `TelemetrySidecar.close()`) with these events unsent. */
  | { kind: "disposed" };

/** Options of {@link TelemetryCapture}. */
export interface CaptureOptions {
  /** `distinct_id` of captured events until {@link TelemetryCapture.identify}; default: a random anonymous id. */
  distinctId?: string;
  /** `api_key` sent with each batch; default: the sidecar's `--api-key`. */
  apiKey?: string;
  /** Send when this many events wait. Default 20. */
  flushAt?: number;
  /** Send this long after the first waiting event. Default 1000 ms. */
  flushIntervalMs?: number;
  /** Events per `ph_send_batch` call. Default 100 (the sidecar takes up to 10,000). */
  maxBatchSize?: number;
  /** Events the webview keeps while the sidecar is away; past it the oldest are dropped. Default 1000. */
  maxQueueSize?: number;
  /** First delay before sending again after a failure (doubling per failure). Default 1000 ms. */
  retryDelayMs?: number;
  /** Cap on that delay. Default 30 s. */
  maxRetryDelayMs?: number;
  /** Send at once when the page is hidden or unloaded. Default true. */
  flushOnPageHide?: boolean;
  /** Properties merged under every event's own. */
  properties?: Record<string, unknown>;
  /** Told about events that will never be accepted. */
  onDrop?: (events: PostHogEvent[], reason: DropReason) => void;
}

/** Options of one {@link TelemetryCapture.capture} call. */
export interface CaptureEventOptions {
  /** When it happened; default: now. */
  timestamp?: Date | string;
  /** Overrides the current `distinct_id` for this event. */
  distinctId?: string;
}

/** Outcome of a {@link TelemetryCapture.flush}. */
export interface CaptureFlushResult {
  /** Events the sidecar accepted during this flush. */
  accepted: number;
  /** Events still waiting in the webview (the sidecar was away). */
  pending: number;
}

/** The batching queue. See the module comment. */
export class TelemetryCapture {
  readonly #sink: BatchSink;
  readonly #apiKey: string | undefined;
  readonly #flushAt: number;
  readonly #flushIntervalMs: number;
  readonly #maxBatchSize: number;
  readonly #maxQueueSize: number;
  readonly #retryDelayMs: number;
  readonly #maxRetryDelayMs: number;
  readonly #properties: Record<string, unknown>;
  readonly #onDrop: (events: PostHogEvent[], reason: DropReason) => void;
  readonly #cleanups: Array<() => void> = [];

  #queue: PostHogEvent[] = [];
  #distinctId: string;
  #anonymous: boolean;
  #draining: Promise<CaptureFlushResult> | null = null;
  #intervalTimer: ReturnType<typeof setTimeout> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #nextRetryDelayMs: number;
  #disposed = false;

  constructor(sink: BatchSink, options: CaptureOptions = {}) {
    this.#sink = sink;
    this.#apiKey = options.apiKey;
    this.#flushAt = Math.max(1, options.flushAt ?? 20);
    this.#flushIntervalMs = options.flushIntervalMs ?? 1000;
    this.#maxBatchSize = Math.min(10_000, Math.max(1, options.maxBatchSize ?? 100));
    this.#maxQueueSize = Math.max(1, options.maxQueueSize ?? 1000);
    this.#retryDelayMs = options.retryDelayMs ?? 1000;
    this.#maxRetryDelayMs = options.maxRetryDelayMs ?? 30_000;
    this.#nextRetryDelayMs = this.#retryDelayMs;
    this.#properties = options.properties ?? {};
    this.#onDrop = options.onDrop ?? (() => {});
    this.#anonymous = options.distinctId === undefined;
    this.#distinctId = options.distinctId ?? uuidv7();

    // A (re)started sidecar: send what waited for it.
    this.#cleanups.push(
      sink.on("spawn", () => {
        if (this.#queue.length > 0 && !this.#disposed) void this.flush();
      }),
    );
    if ((options.flushOnPageHide ?? true) && typeof document !== "undefined") {
      const onVisibility = (): void => {
        if (document.visibilityState === "hidden") void this.flush();
      };
      const onPageHide = (): void => void this.flush();
      document.addEventListener("visibilitychange", onVisibility);
      this.#cleanups.push(() => document.removeEventListener("visibilitychange", onVisibility));
      if (typeof window !== "undefined") {
        window.addEventListener("pagehide", onPageHide);
        this.#cleanups.push(() => window.removeEventListener("pagehide", onPageHide));
      }
    }
  }

  /** The `distinct_id` given to events captured now. */
  get distinctId(): string {
    return this.#distinctId;
  }

  /** Events waiting in the webview (not yet accepted by the sidecar). */
  get pending(): number {
    return this.#queue.length;
  }

  /** Queue one event; it goes out with the next batch. Never throws for a sidecar problem. */
  capture(event: string, properties?: Record<string, unknown>, options: CaptureEventOptions = {}): void {
    if (this.#disposed) throw new Error("capture() after dispose()");
    const timestamp = options.timestamp ?? new Date();
    this.enqueue({
      event,
      distinct_id: options.distinctId ?? this.#distinctId,
      properties: { ...this.#properties, ...properties },
      uuid: uuidv7(),
      timestamp: typeof timestamp === "string" ? timestamp : timestamp.toISOString(),
    });
  }

  /**
   * Queue an event that is already complete, as it is: no `properties` merged, its own `uuid`,
   * `timestamp` and `distinct_id` kept (e.g. an event another library built). It goes out with
   * the next batch.
   */
  enqueue(event: PostHogEvent): void {
    if (this.#disposed) throw new Error("enqueue() after dispose()");
    this.#queue.push(event);
    if (this.#queue.length > this.#maxQueueSize) {
      const dropped = this.#queue.splice(0, this.#queue.length - this.#maxQueueSize);
      this.#onDrop(dropped, { kind: "overflow" });
    }
    if (this.#retryTimer !== undefined) return; // waiting for the sidecar; the retry sends it
    if (this.#queue.length >= this.#flushAt) {
      void this.flush();
    } else if (this.#draining === null) {
      this.#armInterval();
    }
  }

  /**
   * Use `distinctId` for events captured from now on. Captures `$identify` (with
   * `$anon_distinct_id` when the previous id was anonymous, and `$set` when `userProperties`
   * are given), as PostHog's own libraries do.
   */
  identify(distinctId: string, userProperties?: Record<string, unknown>): void {
    if (distinctId === "") throw new Error("identify() needs a non-empty distinct id");
    const previous = this.#distinctId;
    const wasAnonymous = this.#anonymous;
    this.#distinctId = distinctId;
    this.#anonymous = false;
    if (previous === distinctId && userProperties === undefined) return;
    const properties: Record<string, unknown> = {};
    if (wasAnonymous && previous !== distinctId) properties.$anon_distinct_id = previous;
    if (userProperties !== undefined) properties.$set = userProperties;
    this.capture("$identify", properties);
  }

  /** Forget the identified user: later events get a new anonymous id. */
  reset(): void {
    this.#distinctId = uuidv7();
    this.#anonymous = true;
  }

  /**
   * Send everything waiting now. Resolves when the queue is empty or the sidecar is away (the
   * rest is kept and sent later); never rejects.
   */
  flush(): Promise<CaptureFlushResult> {
    this.#draining ??= this.#drain().finally(() => {
      this.#draining = null;
      // Events captured between the drain's last look at the queue and now.
      if (this.#queue.length > 0 && this.#retryTimer === undefined) this.#armInterval();
    });
    return this.#draining;
  }

  /** Stop the timers and page listeners; events still waiting are reported to `onDrop`. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#clearTimers();
    for (const cleanup of this.#cleanups.splice(0)) cleanup();
    const unsent = this.#queue.splice(0);
    if (unsent.length > 0) this.#onDrop(unsent, { kind: "disposed" });
  }

  async #drain(): Promise<CaptureFlushResult> {
    this.#clearTimers();
    let accepted = 0;
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#maxBatchSize);
      let result: SendBatchResult;
      try {
        result = await this.#sink.sendBatch(batch, this.#apiKey === undefined ? {} : { apiKey: this.#apiKey });
      } catch (error) {
        if (isRetryable(error) && !this.#disposed) {
          this.#queue.unshift(...batch);
          this.#scheduleRetry();
          break;
        }
        this.#onDrop(batch, { kind: "failed", error });
        continue;
      }
      this.#nextRetryDelayMs = this.#retryDelayMs;
      accepted += result.accepted;
      for (const { index, error } of result.rejected) {
        const event = batch[index];
        if (event !== undefined) this.#onDrop([event], { kind: "rejected", error });
      }
    }
    return { accepted, pending: this.#queue.length };
  }

  #armInterval(): void {
    if (this.#intervalTimer !== undefined || this.#disposed) return;
    this.#intervalTimer = setTimeout(() => {
      this.#intervalTimer = undefined;
      void this.flush();
    }, this.#flushIntervalMs);
  }

  #scheduleRetry(): void {
    if (this.#disposed) return;
    const delay = this.#nextRetryDelayMs;
    this.#nextRetryDelayMs = Math.min(this.#maxRetryDelayMs, this.#nextRetryDelayMs * 2);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.flush();
    }, delay);
  }

  #clearTimers(): void {
    if (this.#intervalTimer !== undefined) clearTimeout(this.#intervalTimer);
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#intervalTimer = undefined;
    this.#retryTimer = undefined;
  }
}
