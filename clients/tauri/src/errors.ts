/**
 * The client's error hierarchy: every failure a call can end with is one of these.
 */

import { RpcErrorCode, type ExitStatus } from "./types.js";

/** Base class of every error the client raises. */
export class SidecarError extends Error {
  override name = "SidecarError";
}

/** The sidecar answered the call with a JSON-RPC error object. */
export class SidecarRpcError extends SidecarError {
  override name = "SidecarRpcError";
  /** JSON-RPC error code, e.g. -32602 for invalid params (see `RpcErrorCode`). */
  readonly code: number;
  /** The `data` member of the error object, when there was one (the sidecar says which param). */
  readonly data: unknown;
  /** The method that was called. */
  readonly method: string;
  /** The error object's `message`, without the method and code this error's message adds. */
  readonly rpcMessage: string;

  constructor(method: string, code: number, message: string, data?: unknown) {
    super(`${method}: ${message} (${code})${data === undefined ? "" : `: ${describe(data)}`}`);
    this.method = method;
    this.code = code;
    this.data = data;
    this.rpcMessage = message;
  }
}

/** The sidecar process ended (exit, crash, kill) or failed while the call was waiting. */
export class SidecarClosedError extends SidecarError {
  override name = "SidecarClosedError";
  /** Exit code and signal when the process terminated; null when it failed otherwise. */
  readonly exit: ExitStatus | null;

  constructor(message: string, exit: ExitStatus | null = null) {
    super(message);
    this.exit = exit;
  }
}

/** The call was not sent: the sidecar is not running (not started, restarting, or stopped). */
export class SidecarUnavailableError extends SidecarError {
  override name = "SidecarUnavailableError";
  /** The client's state when the call was made. */
  readonly state: string;

  constructor(message: string, state: string, options?: ErrorOptions) {
    super(message, options);
    this.state = state;
  }
}

/** No answer came within the call's timeout. The request may still have been carried out. */
export class SidecarTimeoutError extends SidecarError {
  override name = "SidecarTimeoutError";
  readonly method: string;
  readonly timeoutMs: number;

  constructor(method: string, timeoutMs: number) {
    super(`${method}: no answer from the sidecar within ${timeoutMs} ms`);
    this.method = method;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * Whether sending the same request again later may succeed: the process was away, slow, or
 * its storage was unavailable (nothing was stored). Invalid requests are not retryable.
 */
export function isRetryable(error: unknown): boolean {
  if (error instanceof SidecarRpcError) return error.code === RpcErrorCode.StorageUnavailable;
  return (
    error instanceof SidecarClosedError ||
    error instanceof SidecarUnavailableError ||
    error instanceof SidecarTimeoutError
  );
}

function describe(data: unknown): string {
  if (typeof data === "string") return data;
  try {
    return JSON.stringify(data);
  } catch {
    return String(data);
  }
}
