export {
  TelemetrySidecar,
  buildArgs,
  DEFAULT_PROGRAM,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type CallOptions,
  type LogSource,
  type RestartOptions,
  type SidecarEvents,
  type SidecarLogger,
  type SidecarState,
  type TelemetrySidecarOptions,
} from "./client.js";
export {
  TelemetryCapture,
  type BatchSink,
  type CaptureEventOptions,
  type CaptureFlushResult,
  type CaptureOptions,
  type DropReason,
} from "./capture.js";
export {
  SidecarClosedError,
  SidecarError,
  SidecarRpcError,
  SidecarTimeoutError,
  SidecarUnavailableError,
  isRetryable,
} from "./errors.js";
export { LineDecoder, DEFAULT_MAX_LINE_CHARS, type DecodedLines } from "./framing.js";
export { uuidv7 } from "./uuid.js";
export {
  RpcErrorCode,
  type DroppedCounts,
  type ExitStatus,
  type FlushResult,
  type OptOutResult,
  type PingResult,
  type PostHogEvent,
  type RejectedEvent,
  type SendBatchResult,
  type ShutdownResult,
  type SidecarMethod,
  type SidecarMethods,
  type StatusResult,
} from "./types.js";
