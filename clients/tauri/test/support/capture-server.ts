/**
 * A tiny PostHog capture endpoint on 127.0.0.1 for the tests: it takes `POST /batch/` bodies
 * (gzip, as the sidecar sends them), records each event and answers `{"status":1}`.
 */

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";

// Saved before any test fakes the timers: waits on the real network use real time.
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;

export interface ReceivedEvent {
  event: string;
  distinct_id: string;
  uuid: string;
  timestamp: string;
  properties: Record<string, unknown>;
  [field: string]: unknown;
}

export interface ReceivedRequest {
  apiKey: unknown;
  sentAt: unknown;
  gzip: boolean;
  events: ReceivedEvent[];
}

export interface CaptureServer {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  readonly requests: ReceivedRequest[];
  readonly events: ReceivedEvent[];
  /** Resolve once at least `n` events have arrived; reject after `timeoutMs` of real time. */
  waitForEvents(n: number, timeoutMs?: number): Promise<ReceivedEvent[]>;
  close(): Promise<void>;
}

export async function startCaptureServer(): Promise<CaptureServer> {
  const requests: ReceivedRequest[] = [];
  const events: ReceivedEvent[] = [];
  const waiters: Array<() => void> = [];

  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    if (req.method !== "POST" || !(req.url === "/batch/" || req.url === "/batch")) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    const gzip = req.headers["content-encoding"] === "gzip" || (body[0] === 0x1f && body[1] === 0x8b);
    let payload: { api_key?: unknown; sent_at?: unknown; batch?: unknown };
    try {
      payload = JSON.parse((gzip ? gunzipSync(body) : body).toString("utf8")) as typeof payload;
    } catch {
      res.writeHead(400, { "content-type": "text/plain" }).end("invalid body");
      return;
    }
    if (!Array.isArray(payload.batch) || payload.batch.length === 0) {
      res.writeHead(400, { "content-type": "text/plain" }).end("empty batch");
      return;
    }
    const batch = payload.batch as ReceivedEvent[];
    requests.push({ apiKey: payload.api_key, sentAt: payload.sent_at, gzip, events: batch });
    events.push(...batch);
    res.writeHead(200, { "content-type": "application/json" }).end('{"status":1}');
    for (const wake of waiters.splice(0)) wake();
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => handle(req, res, Buffer.concat(chunks)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    events,
    waitForEvents: (n, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const timer = realSetTimeout(() => {
          reject(new Error(`expected ${n} events at the capture server, got ${events.length}`));
        }, timeoutMs);
        const check = (): void => {
          if (events.length >= n) {
            realClearTimeout(timer);
            resolve(events.slice());
          } else {
            waiters.push(check);
          }
        };
        check();
      }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
