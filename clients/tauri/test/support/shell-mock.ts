/**
 * A stand-in for the Rust side of `tauri-plugin-shell`, behind the real JS API.
 *
 * `mockIPC` from `@tauri-apps/api/mocks` routes the plugin's `invoke` calls here, and this runs
 * a REAL child process (the sidecar) with node's `child_process.spawn`, emitting the events the
 * Rust plugin emits, in its shapes:
 *
 * - `plugin:shell|spawn` `{program, args, options: {sidecar: true, ...}, onEvent: Channel}` ->
 *   the child's pid. Rust: `plugins/shell/src/commands.rs` (`spawn`), which checks the program
 *   against `bundle.externalBin` when `options.sidecar` is set.
 * - Channel messages `{event: "Stdout" | "Stderr", payload: string}`,
 *   `{event: "Terminated", payload: {code, signal}}`, `{event: "Error", payload: string}`
 *   (`JSCommandEvent`, serde `tag = "event", content = "payload"`). Channel delivery is
 *   `runCallback(channelId, {index, message})` with an increasing index, then `{end: true, index}`
 *   (what `Channel` in `@tauri-apps/api/core.js` expects).
 * - Stdout/stderr are cut as `tauri::utils::io::read_line` cuts them: through the first `\n` of
 *   the bytes one read returned, or, when that read holds no `\n`, through its first `\r`; the
 *   terminator stays in the payload; a read with neither is held until one comes; the rest is
 *   sent at end of stream. `Terminated` comes after both streams ended
 *   (`plugins/shell/src/process/mod.rs`: the waiter takes a write lock the readers hold).
 * - `plugin:shell|stdin_write` `{pid, buffer}` writes the string's UTF-8 bytes (or the byte
 *   array) and adds nothing; an unknown pid is silently ignored, as in Rust.
 * - `plugin:shell|kill` `{cmd: "killChild", pid}` forgets the child and kills it (SIGKILL).
 */

import { spawn, type ChildProcess } from "node:child_process";
import { constants } from "node:os";

import { Channel } from "@tauri-apps/api/core";
import { clearMocks, mockIPC } from "@tauri-apps/api/mocks";

/** How stdout reaches the Channel. */
export type StdoutChunking =
  /** Line by line, as the Rust plugin's `read_line` does. */
  | "rust"
  /** Each line rewritten to end in `\r\n` and sent in 2 or 3 pieces, the `\r` and `\n` apart. */
  | "split";

export interface ShellMockOptions {
  /** The real command line that stands for the sidecar (program and leading arguments). */
  command: readonly string[];
  /** The only `externalBin` entry the app allows. */
  externalBin?: string;
  /** Environment of the children (the options' `env` is merged over it). */
  env?: NodeJS.ProcessEnv;
  stdoutChunking?: StdoutChunking;
}

export interface SpawnRecord {
  pid: number;
  program: string;
  args: string[];
  options: Record<string, unknown>;
}

/** What the tests can see and do. */
export interface ShellMock {
  readonly spawns: SpawnRecord[];
  /** Every line written to a child's stdin, in order. */
  readonly stdinWrites: string[];
  /** Number of `Stdout` channel messages sent. */
  stdoutEvents(): number;
  /** The live child of a pid (the real OS process). */
  child(pid: number): ChildProcess | undefined;
  /**
   * Pause / resume the sidecar (SIGSTOP / SIGCONT to its process group, so a PyInstaller one-file
   * bootloader and the program it runs are both paused).
   */
  pause(pid: number): void;
  resume(pid: number): void;
  /**
   * Crash it: SIGKILL to its whole process group (a one-file bootloader and its program alike).
   * The plugin's own `kill` (below) hits the direct child only, as Tauri's does.
   */
  crash(pid: number): void;
  /** Send an `Error` event on a child's channel, as the plugin does when it cannot wait or decode. */
  emitError(pid: number, message: string): void;
  /** Resolve when `n` processes have been spawned. */
  waitForSpawns(n: number): Promise<void>;
  /** Kill every child still running and remove the IPC mock. */
  dispose(): Promise<void>;
}

type InternalsWindow = Window & {
  __TAURI_INTERNALS__: { runCallback: (id: number, data: unknown) => void };
};

/** Install the mock; remember to `dispose()` it. */
export function installShellMock(options: ShellMockOptions): ShellMock {
  const externalBin = options.externalBin ?? "binaries/telemetry-sidecar";
  const chunking = options.stdoutChunking ?? "rust";
  const children = new Map<number, ChildProcess>();
  const everything = new Set<ChildProcess>();
  const spawns: SpawnRecord[] = [];
  const stdinWrites: string[] = [];
  const spawnWaiters: Array<() => void> = [];
  const senders = new Map<number, (message: unknown) => void>();
  let stdoutEvents = 0;

  const spawnChild = (args: Record<string, unknown>): Promise<number> => {
    const program = String(args.program);
    const spawnOptions = (args.options ?? {}) as Record<string, unknown>;
    const argv = (args.args ?? []) as string[];
    if (spawnOptions.sidecar !== true || (program !== externalBin && program.replace(/\.exe$/, "") !== externalBin)) {
      // Rust: Error::SidecarNotAllowed / ProgramNotAllowed, serialised as a string.
      return Promise.reject(`sidecar ${program} not allowed`);
    }
    const channelId = channelIdOf(args.onEvent);
    const send = channelSender(channelId);
    const env =
      spawnOptions.env === null
        ? {}
        : { ...(options.env ?? process.env), ...((spawnOptions.env as Record<string, string> | undefined) ?? {}) };
    const [file, ...lead] = options.command;
    if (file === undefined) return Promise.reject("empty sidecar command");
    const child = spawn(file, [...lead, ...argv], {
      cwd: typeof spawnOptions.cwd === "string" ? spawnOptions.cwd : undefined,
      env,
      stdio: ["pipe", "pipe", "pipe"],
      // Its own process group, so a test can pause the whole sidecar (see pause()).
      detached: true,
    });
    everything.add(child);
    const stdoutCutter = new RustLineCutter((line) => {
      for (const piece of chunking === "split" ? splitLine(line) : [line]) {
        stdoutEvents += 1;
        send({ event: "Stdout", payload: piece });
      }
    });
    const stderrCutter = new RustLineCutter((line) => send({ event: "Stderr", payload: line }));
    child.stdout?.on("data", (chunk: Buffer) => stdoutCutter.push(chunk));
    child.stdout?.on("end", () => stdoutCutter.end());
    child.stderr?.on("data", (chunk: Buffer) => stderrCutter.push(chunk));
    child.stderr?.on("end", () => stderrCutter.end());
    child.stdin?.on("error", () => {}); // EPIPE after the child died: reported by the write call
    return new Promise((resolve, reject) => {
      child.once("error", (error) => {
        everything.delete(child);
        reject(String(error));
      });
      child.once("spawn", () => {
        const pid = child.pid as number;
        children.set(pid, child);
        senders.set(pid, send);
        spawns.push({ pid, program, args: argv, options: spawnOptions });
        for (const wake of spawnWaiters.splice(0)) wake();
        // 'close' fires after the exit and after both streams ended.
        child.once("close", (code, signal) => {
          if (children.get(pid) === child) children.delete(pid);
          everything.delete(child);
          send({
            event: "Terminated",
            payload: { code, signal: signal === null ? null : (constants.signals[signal] ?? null) },
          });
          send("end");
        });
        resolve(pid);
      });
    });
  };

  const stdinWrite = (args: Record<string, unknown>): Promise<null> => {
    const child = children.get(Number(args.pid));
    if (child === undefined || child.stdin === null) return Promise.resolve(null);
    const buffer = args.buffer;
    const bytes = typeof buffer === "string" ? Buffer.from(buffer, "utf8") : Buffer.from(buffer as number[]);
    stdinWrites.push(bytes.toString("utf8"));
    return new Promise((resolve, reject) => {
      child.stdin?.write(bytes, (error) => (error ? reject(String(error)) : resolve(null)));
    });
  };

  const kill = (args: Record<string, unknown>): null => {
    const pid = Number(args.pid);
    const child = children.get(pid);
    if (child !== undefined) {
      children.delete(pid);
      child.kill("SIGKILL");
    }
    return null;
  };

  mockIPC((cmd, args) => {
    const payload = (args ?? {}) as Record<string, unknown>;
    switch (cmd) {
      case "plugin:shell|spawn":
        return spawnChild(payload);
      case "plugin:shell|stdin_write":
        return stdinWrite(payload);
      case "plugin:shell|kill":
        return kill(payload);
      default:
        return Promise.reject(`command ${cmd} not found`);
    }
  });

  return {
    spawns,
    stdinWrites,
    stdoutEvents: () => stdoutEvents,
    child: (pid) => children.get(pid),
    pause: (pid) => process.kill(-pid, "SIGSTOP"),
    resume: (pid) => signalGroup(pid, "SIGCONT"),
    crash: (pid) => process.kill(-pid, "SIGKILL"),
    emitError: (pid, message) => senders.get(pid)?.({ event: "Error", payload: message }),
    waitForSpawns: (n) =>
      new Promise((resolve) => {
        const check = (): void => {
          if (spawns.length >= n) resolve();
          else spawnWaiters.push(check);
        };
        check();
      }),
    dispose: async () => {
      const exits = [...everything].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once("exit", () => resolve());
            child.kill("SIGKILL");
          }),
      );
      await Promise.all(exits);
      // Whatever a one-file bootloader left behind in the groups.
      for (const { pid } of spawns) signalGroup(pid, "SIGKILL");
      clearMocks();
    },
  };
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is gone.
  }
}

/** The channel id, whether the mock received the `Channel` itself or its IPC form `__CHANNEL__:id`. */
function channelIdOf(onEvent: unknown): number {
  if (onEvent instanceof Channel) return onEvent.id;
  if (typeof onEvent === "string" && onEvent.startsWith("__CHANNEL__:")) {
    return Number(onEvent.slice("__CHANNEL__:".length));
  }
  if (typeof onEvent === "object" && onEvent !== null && "id" in onEvent) return Number(onEvent.id);
  throw new Error(`spawn without an onEvent channel: ${String(onEvent)}`);
}

/** Deliver messages on a channel in order, as the Rust `Channel` does. */
function channelSender(channelId: number): (message: unknown) => void {
  let index = 0;
  let ended = false;
  return (message) => {
    if (ended) return;
    const internals = (window as unknown as InternalsWindow).__TAURI_INTERNALS__;
    if (message === "end") {
      ended = true;
      internals.runCallback(channelId, { end: true, index });
      return;
    }
    internals.runCallback(channelId, { index, message });
    index += 1;
  };
}

/** `tauri::utils::io::read_line`, applied to each chunk a read returned. */
class RustLineCutter {
  #held: Buffer[] = [];
  readonly #emit: (line: string) => void;

  constructor(emit: (line: string) => void) {
    this.#emit = emit;
  }

  push(chunk: Buffer): void {
    let rest = chunk;
    while (rest.length > 0) {
      let end = rest.indexOf(0x0a);
      if (end === -1) end = rest.indexOf(0x0d);
      if (end === -1) {
        this.#held.push(rest);
        return;
      }
      this.#held.push(rest.subarray(0, end + 1));
      this.#emit(Buffer.concat(this.#held).toString("utf8"));
      this.#held = [];
      rest = rest.subarray(end + 1);
    }
  }

  end(): void {
    if (this.#held.length > 0) this.#emit(Buffer.concat(this.#held).toString("utf8"));
    this.#held = [];
  }
}

let splitCounter = 0;

/** `{...}\n` -> e.g. [`{..`, `.}\r`, `\n`] or [`{...`, `}\r\n`]: 2 or 3 pieces, alternating. */
function splitLine(line: string): string[] {
  const body = line.replace(/\r?\n$/, "");
  const cut = Math.max(1, Math.floor(body.length / 2));
  splitCounter += 1;
  if (splitCounter % 2 === 1) return [body.slice(0, cut), `${body.slice(cut)}\r`, "\n"];
  return [body.slice(0, cut), `${body.slice(cut)}\r\n`];
}
