/**
 * The sidecar's JSON-RPC contract (DESIGN.md, "Methods"), as TypeScript types.
 *
 * Field names are the wire's own (snake_case) so results pass through unchanged.
 */

/** A PostHog event object, as `ph_send_batch` takes it. */
export interface PostHogEvent {
  /** Non-empty event name. */
  event: string;
  /** Non-empty string or number (sent as a string); wins over `properties.distinct_id`. */
  distinct_id: string | number;
  properties?: Record<string, unknown>;
  /** Kept when a valid UUID, assigned (UUIDv7) when absent; an invalid one rejects the event. */
  uuid?: string;
  /** RFC 3339 / ISO 8601; converted to UTC, set to now when absent. */
  timestamp?: string;
  /** Any other field passes through unchanged. */
  [field: string]: unknown;
}

/** One event `ph_send_batch` refused, by its index in the batch. */
export interface RejectedEvent {
  index: number;
  error: string;
}

/** Result of `ph_send_batch`: the accepted events are committed to the sidecar's queue. */
export interface SendBatchResult {
  accepted: number;
  /** Validation failures only. */
  rejected: RejectedEvent[];
  /** Queue depth after the commit. */
  queued: number;
}

/** Result of `ph_flush`. */
export interface FlushResult {
  /** Events this call delivered. */
  delivered: number;
  queued: number;
}

/** Counters of events the sidecar dropped, persisted across restarts. */
export interface DroppedCounts {
  overflow: number;
  rejected: number;
  retries_exhausted: number;
  opt_out: number;
}

/** Result of `ph_status`. */
export interface StatusResult {
  version: string;
  queued: number;
  /** Null when the queue is empty. */
  oldest_event_age_s: number | null;
  delivered: number;
  dropped: DroppedCounts;
  last_error: string | null;
  /** Null when there is nothing to wait for. */
  next_attempt_in_s: number | null;
  /** Base URL of the capture host, without trailing slash. */
  host: string;
  opted_out: boolean;
  /**
   * Where a damaged database was set aside at start, or null. Documented in the README's
   * `ph_status` example; not (yet) in DESIGN.md's contract table, hence optional.
   */
  quarantined_db?: string | null;
  /**
   * What an answered `ph_send_batch` survives (`--durability`): `full`, a power cut too;
   * `normal`, a killed process. Added after DESIGN.md's contract table, hence optional.
   */
  durability?: "full" | "normal";
}

/** Result of `ph_set_opt_out`. */
export interface OptOutResult {
  opted_out: boolean;
  /** Events purged from the queue by opting out. */
  purged: number;
}

/** Result of `ping`. */
export interface PingResult {
  version: string;
}

/** Result of `shutdown`; the process exits 0 after answering. */
export interface ShutdownResult {
  ok: true;
}

/** Params and result of every method, by name. */
export interface SidecarMethods {
  ph_send_batch: {
    params: { batch: PostHogEvent[]; api_key?: string };
    result: SendBatchResult;
  };
  ph_flush: { params: { timeout?: number }; result: FlushResult };
  ph_status: { params: undefined; result: StatusResult };
  ph_set_opt_out: { params: { opt_out: boolean }; result: OptOutResult };
  ping: { params: undefined; result: PingResult };
  shutdown: { params: undefined; result: ShutdownResult };
}

export type SidecarMethod = keyof SidecarMethods;

/** JSON-RPC error codes the sidecar answers with. */
export const RpcErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  StorageUnavailable: -32001,
} as const;

/** What the process reported when it ended (the shell plugin's `Terminated` payload). */
export interface ExitStatus {
  code: number | null;
  signal: number | null;
}
