/**
 * The WebKit test page: a Tauri app's webview in miniature. It routes the Tauri IPC to the
 * loopback bridge, runs the client and the posthog-js bridge from their TypeScript source with
 * the real posthog-js, and exposes `window.webkitPage` for the Python test to drive through
 * WebDriver.
 *
 * posthog-js's `before_send` hooks run in order: the page's `recordSeen` first (what the sidecar
 * hook is handed), then the sidecar hook that `connectPostHog` appends, then the page's
 * `recordReturned`, which runs only for events the sidecar hook gave back to posthog-js.
 */

import posthog, { type CaptureResult } from "posthog-js";

import { TelemetrySidecar } from "../../../clients/tauri/src/index.js";
import { connectPostHog, type PostHogConnection } from "../../../clients/tauri/src/posthog.js";
import { installTauriIpc } from "./tauri-ipc.js";

/** What the bridge writes into the page before the bundle runs. */
interface PageConfig {
  /** `--host` of the sidecar: the capture fake. */
  captureHost: string;
  /** `--data-dir` of the sidecar. */
  dataDir: string;
  /** The project token: the sidecar's `--api-key` and posthog-js's token. */
  token: string;
  /** More sidecar arguments (short retry backoffs). */
  sidecarArgs: string[];
}

/** How `startSidecar` went. */
interface StartResult {
  pid: number | null;
  /** Why the start was refused, or null. */
  startError: string | null;
  userAgent: string;
  webdriver: boolean;
}

/** An event as a hook saw it, in JSON (the `Date` timestamp as its ISO string). */
type Recorded = Record<string, unknown> & { uuid: string; event: string };

declare global {
  interface Window {
    __WEBKIT_CONFIG__: PageConfig;
    webkitPage: typeof webkitPage;
  }
}

const config = window.__WEBKIT_CONFIG__;
const logs: string[] = [];
const seen: Recorded[] = [];
const returned: Recorded[] = [];
let sidecar: TelemetrySidecar | null = null;
let connection: PostHogConnection | null = null;
let restartCaptures: Promise<string[]> | null = null;

function record(into: Recorded[]) {
  return (result: CaptureResult | null): CaptureResult | null => {
    if (result !== null) into.push(JSON.parse(JSON.stringify(result)) as Recorded);
    return result;
  };
}

function running(): TelemetrySidecar {
  if (sidecar === null) throw new Error("startSidecar() first");
  return sidecar;
}

function connected(): PostHogConnection {
  if (connection === null) throw new Error("startPostHog() first");
  return connection;
}

/**
 * Run one posthog-js call and return the uuid of the event named `name` it built. The hooks run
 * within the call, so the event is among those `recordSeen` took during it.
 */
function built(name: string, call: () => unknown): string {
  const before = seen.length;
  call();
  const event = seen.slice(before).find((e) => e.event === name);
  if (event === undefined) throw new Error(`posthog-js built no ${name} event`);
  return event.uuid;
}

const webkitPage = {
  /**
   * Route the IPC to the bridge and start the sidecar through the real plugin-shell API, as
   * `program` (default: the app's `externalBin` entry). A refused start is returned as
   * `startError`, as an app would log it and go on.
   */
  async startSidecar(program?: string): Promise<StartResult> {
    await installTauriIpc(window.location.origin);
    sidecar = new TelemetrySidecar({
      ...(program === undefined ? {} : { program }),
      dataDir: config.dataDir,
      host: config.captureHost,
      apiKey: config.token,
      args: config.sidecarArgs,
      // A crash is followed by a quick restart, so the scenario does not wait on the default 500 ms.
      restart: { initialDelayMs: 50 },
      logger: (message, source) => logs.push(`${source}: ${message}`),
    });
    let startError: string | null = null;
    try {
      await sidecar.start();
    } catch (error) {
      startError = String(error);
    }
    return { pid: sidecar.pid, startError, userAgent: navigator.userAgent, webdriver: navigator.webdriver };
  },

  /** Start the sidecar, initialise posthog-js as an app would, and connect the two. */
  async startPostHog(program?: string): Promise<StartResult> {
    const started = await webkitPage.startSidecar(program);
    posthog.init(config.token, {
      // posthog-js's own requests (only `$snapshot` here) go to the bridge, which records them.
      api_host: window.location.origin,
      persistence: "memory",
      // WebDriver sets navigator.webdriver, which posthog-js otherwise takes for a bot.
      opt_out_useragent_filter: true,
      advanced_disable_flags: true,
      disable_external_dependency_loading: true,
      disable_session_recording: true,
      autocapture: false,
      request_queue_config: { flush_interval_ms: 100 },
      before_send: [record(seen)],
    });
    connection = connectPostHog(posthog, running(), {
      logger: (message, error) => logs.push(`posthog bridge: ${message}${error === undefined ? "" : ` ${String(error)}`}`),
    });
    const hooks = posthog.config.before_send;
    posthog.set_config({ before_send: [...(Array.isArray(hooks) ? hooks : []), record(returned)] });
    return started;
  },

  /** One event of each kind the issue names; returns the uuids posthog-js gave them. */
  scenario(): string[] {
    return [
      built("signed up", () => posthog.capture("signed up", { plan: "pro", seats: 3, nested: { a: [1, 2] } })),
      built("$identify", () => posthog.identify("user-42", { email: "user42@example.com" }, { first_seen: "2026-12-03" })),
      built("$create_alias", () => posthog.alias("alias-42")),
      built("$groupidentify", () => posthog.group("company", "acme", { name: "Acme Inc" })),
      built("$pageview", () => posthog.capture("$pageview", { $current_url: window.location.href })),
      built("$exception", () => posthog.captureException(new Error("boom in WebKit"), { where: "scenario" })),
    ];
  },

  /** Capture `names` through posthog-js; returns their uuids. */
  capture(names: string[], properties: Record<string, unknown> = {}): string[] {
    return names.map((name) => built(name, () => posthog.capture(name, properties)));
  },

  /**
   * Capture `names` as soon as the sidecar is seen to have crashed (state `restarting`), so they
   * wait in the webview queue for the next process. `restartCaptured()` returns their uuids.
   */
  captureOnRestart(names: string[]): void {
    const client = running();
    restartCaptures = new Promise((resolve) => {
      const off = client.on("state", (state) => {
        if (state !== "restarting") return;
        off();
        resolve(webkitPage.capture(names, { during: "restart" }));
      });
    });
  },

  /** The uuids `captureOnRestart` captured, once it has. */
  restartCaptured(): Promise<string[]> {
    if (restartCaptures === null) throw new Error("captureOnRestart() first");
    return restartCaptures;
  },

  /**
   * A session-replay event, captured as posthog-js's recorder does (its own endpoint, the
   * `recordings` batch); returns its uuid.
   */
  snapshot(): string {
    return built("$snapshot", () =>
      posthog.capture(
        "$snapshot",
        { $snapshot_data: [{ type: 2, data: { node: "<html>" }, timestamp: Date.now() }], $snapshot_bytes: 42 },
        { _url: `${window.location.origin}/s/`, _noTruncate: true, _batchKey: "recordings", skip_client_rate_limiting: true },
      ),
    );
  },

  /** Send what waits in the bridge's webview queues now. */
  async flushWebview(): Promise<{ accepted: number; pending: number }> {
    return connected().flush();
  },

  optOut(): void {
    posthog.opt_out_capturing();
  },

  optIn(): void {
    posthog.opt_in_capturing();
  },

  /** Every event the sidecar hook was handed, as it was handed it. */
  seen(): Recorded[] {
    return seen;
  },

  /** Every event the sidecar hook gave back to posthog-js. */
  returned(): Recorded[] {
    return returned;
  },

  /** Capture through the client's own queue (no posthog-js) and wait until the sidecar has it. */
  async capturePlain(event: string, properties: Record<string, unknown>): Promise<number> {
    const client = running();
    client.capture(event, properties);
    const flushed = await client.captureQueue.flush();
    return flushed.accepted;
  },

  /** `ph_status` of the running sidecar. */
  status(): Promise<unknown> {
    return running().status();
  },

  /** The pid of the current sidecar process, or null while there is none. */
  pid(): number | null {
    return running().pid;
  },

  /** The client's state. */
  state(): string {
    return running().state;
  },

  /** Every line the client and the posthog-js bridge logged (with the sidecar's stderr). */
  logs(): string[] {
    return [...logs];
  },
};

window.webkitPage = webkitPage;
