/**
 * One test's world: a capture server, the shell plugin mock running the real sidecar, a fresh
 * data folder, and clients that are closed afterwards.
 */

import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { TelemetrySidecar, type SidecarEvents, type TelemetrySidecarOptions } from "../../src/index.js";
import { startCaptureServer, type CaptureServer } from "./capture-server.js";
import { installShellMock, type ShellMock, type StdoutChunking } from "./shell-mock.js";

const realSetTimeout = globalThis.setTimeout;

/** The package folder (clients/tauri). */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * The command line standing for the sidecar binary: `SIDECAR_COMMAND` (split on spaces; e.g.
 * the frozen `dist/telemetry-sidecar-<triple>`), else the repository's venv running the source.
 */
export function sidecarCommand(): string[] {
  const fromEnv = process.env.SIDECAR_COMMAND?.trim();
  if (fromEnv) return fromEnv.split(/\s+/);
  const python = resolve(PACKAGE_DIR, "../../.venv/bin/python");
  if (!existsSync(python)) {
    throw new Error(`no ${python}: run \`make install\` at the repository root, or set SIDECAR_COMMAND`);
  }
  return [python, "-m", "sidecar"];
}

/** The environment without anything that would configure the sidecar behind the test's back. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith("POSTHOG_") || key.startsWith("TELEMETRY_SIDECAR_")) continue;
    env[key] = value;
  }
  return env;
}

export interface Harness {
  server: CaptureServer;
  shell: ShellMock;
  dataDir: string;
  logs: Array<{ message: string; source: string }>;
  /** A client of the real sidecar, its `--host` the capture server, `--api-key phc_test`. */
  client(options?: TelemetrySidecarOptions & { withApiKey?: boolean }): TelemetrySidecar;
  dispose(): Promise<void>;
}

export async function startHarness(options: { stdoutChunking?: StdoutChunking } = {}): Promise<Harness> {
  const server = await startCaptureServer();
  const dataDir = mkdtempSync(join(tmpdir(), "telemetry-sidecar-client-"));
  const shell = installShellMock({
    command: sidecarCommand(),
    env: cleanEnv(),
    ...(options.stdoutChunking === undefined ? {} : { stdoutChunking: options.stdoutChunking }),
  });
  const clients: TelemetrySidecar[] = [];
  const logs: Array<{ message: string; source: string }> = [];
  return {
    server,
    shell,
    dataDir,
    logs,
    client: ({ withApiKey = true, ...rest } = {}) => {
      const client = new TelemetrySidecar({
        dataDir,
        host: server.url,
        ...(withApiKey ? { apiKey: "phc_test" } : {}),
        logger: (message, source) => logs.push({ message, source }),
        ...rest,
      });
      clients.push(client);
      return client;
    },
    dispose: async () => {
      for (const client of clients) {
        await client.close({ timeoutMs: 1000 }).catch(() => {});
      }
      await shell.dispose();
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Resolve with the next `name` event of a client. */
export function nextEvent<K extends keyof SidecarEvents>(client: TelemetrySidecar, name: K): Promise<SidecarEvents[K]> {
  return new Promise((resolve) => {
    const off = client.on(name, (payload) => {
      off();
      resolve(payload);
    });
  });
}

/** Sleep in real time, whatever the test did to the timers. */
export function realSleep(ms: number): Promise<void> {
  return new Promise((resolve) => realSetTimeout(resolve, ms));
}
