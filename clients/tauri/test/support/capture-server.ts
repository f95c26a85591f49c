/**
 * A tiny PostHog host on 127.0.0.1 for the tests. It takes the sidecar's `POST /batch/` bodies
 * (gzip), records each event and answers `{"status":1}`. It also stands for posthog-js's own
 * `api_host`: any other request (`/e/`, `/s/`, `/flags/`, remote config) is recorded as a web
 * request, with the events of its body (JSON, gzip or base64 form, as posthog-js sends them), and
 * answered with CORS headers so a page on another origin may call it.
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

/** A request that was not the sidecar's `/batch/` (posthog-js's own traffic). */
export interface WebRequest {
  method: string;
  /** Path without the query string, e.g. `/e/`. */
  path: string;
  /** The events its body carried (none for a GET or a body that holds no event). */
  events: ReceivedEvent[];
}

export interface CaptureServer {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  readonly port: number;
  readonly requests: ReceivedRequest[];
  readonly events: ReceivedEvent[];
  /** posthog-js's own requests, in arrival order. */
  readonly webRequests: WebRequest[];
  /** The events of those requests. */
  readonly webEvents: ReceivedEvent[];
  /** Resolve once at least `n` events have arrived at `/batch/`; reject after `timeoutMs` of real time. */
  waitForEvents(n: number, timeoutMs?: number): Promise<ReceivedEvent[]>;
  /** The same for events posthog-js sent itself. */
  waitForWebEvents(n: number, timeoutMs?: number): Promise<ReceivedEvent[]>;
  close(): Promise<void>;
}

const CORS_HEADERS = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, POST, OPTIONS",
  "access-control-allow-headers": "content-type",
};

/** Start the server; `port` 0 (the default) takes a free one, another reuses a known port. */
export async function startCaptureServer(options: { port?: number } = {}): Promise<CaptureServer> {
  const requests: ReceivedRequest[] = [];
  const events: ReceivedEvent[] = [];
  const webRequests: WebRequest[] = [];
  const webEvents: ReceivedEvent[] = [];
  const waiters: Array<() => void> = [];

  const handleWeb = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const method = req.method ?? "GET";
    if (method === "OPTIONS") {
      res.writeHead(204, CORS_HEADERS).end();
      return;
    }
    const carried = method === "POST" ? eventsOfWebBody(body) : [];
    webRequests.push({ method, path, events: carried });
    webEvents.push(...carried);
    res.writeHead(200, { ...CORS_HEADERS, "content-type": "application/json" }).end('{"status":1}');
    for (const wake of waiters.splice(0)) wake();
  };

  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    if (!(req.url === "/batch/" || req.url === "/batch")) {
      handleWeb(req, res, body);
      return;
    }
    if (req.method !== "POST") {
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
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  const waitFor =
    (list: ReceivedEvent[], what: string) =>
    (n: number, timeoutMs = 10_000): Promise<ReceivedEvent[]> =>
      new Promise((resolve, reject) => {
        const timer = realSetTimeout(() => {
          reject(new Error(`expected ${n} ${what}, got ${list.length}`));
        }, timeoutMs);
        const check = (): void => {
          if (list.length >= n) {
            realClearTimeout(timer);
            resolve(list.slice());
          } else {
            waiters.push(check);
          }
        };
        check();
      });

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    events,
    webRequests,
    webEvents,
    waitForEvents: waitFor(events, "events at the capture server"),
    waitForWebEvents: waitFor(webEvents, "events sent by posthog-js itself"),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * The events in a body posthog-js sent: gzip or not, JSON or a `data=<base64>` form; an event,
 * an array of them, or `{batch: [...]}`.
 */
function eventsOfWebBody(body: Buffer): ReceivedEvent[] {
  if (body.length === 0) return [];
  let text = (body[0] === 0x1f && body[1] === 0x8b ? gunzipSync(body) : body).toString("utf8");
  if (text.startsWith("data=")) {
    text = Buffer.from(decodeURIComponent(text.slice("data=".length).split("&")[0] ?? ""), "base64").toString("utf8");
  }
  let payload: unknown;
  try {
    payload = JSON.parse(text);
  } catch {
    return [];
  }
  const items: unknown[] = Array.isArray(payload)
    ? payload
    : typeof payload === "object" && payload !== null && Array.isArray((payload as { batch?: unknown }).batch)
      ? ((payload as { batch: unknown[] }).batch)
      : [payload];
  return items.filter(
    (item): item is ReceivedEvent => typeof item === "object" && item !== null && typeof (item as { event?: unknown }).event === "string",
  );
}
