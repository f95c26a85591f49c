/**
 * `window.__TAURI_INTERNALS__` for a page outside Tauri: every `invoke` goes to the loopback
 * bridge (`tests/webkit/webkit_bridge.py`), which does what the Rust shell plugin does, and the
 * bridge's Channel messages come back over a server-sent event stream to `runCallback`.
 *
 * Arguments cross as Tauri's IPC serialises them: `JSON.stringify`, under which a `Channel`
 * becomes `__CHANNEL__:<id>` (its `toJSON`). A refused command rejects with the plugin's error
 * text, as Tauri rejects with the serialised Rust error.
 */

type Callback = (data: unknown) => void;

interface Internals {
  invoke(cmd: string, args?: Record<string, unknown>, options?: unknown): Promise<unknown>;
  transformCallback(callback?: Callback, once?: boolean): number;
  unregisterCallback(id: number): void;
  runCallback(id: number, data: unknown): void;
  callbacks: Map<number, Callback>;
  metadata: { currentWindow: { label: string }; currentWebview: { windowLabel: string; label: string } };
}

declare global {
  interface Window {
    __TAURI_INTERNALS__?: Internals;
  }
}

type Answer = { ok: unknown } | { error: unknown };

/** Install the IPC routing to the bridge at `origin`; resolves once the event stream is open. */
export function installTauriIpc(origin: string): Promise<void> {
  const callbacks = new Map<number, Callback>();
  const internals: Internals = {
    async invoke(cmd, args = {}) {
      const response = await fetch(`${origin}/ipc`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ cmd, args }),
      });
      const answer = (await response.json()) as Answer;
      if ("error" in answer) throw answer.error;
      return answer.ok;
    },
    transformCallback(callback, once = false) {
      const id = window.crypto.getRandomValues(new Uint32Array(1))[0] as number;
      callbacks.set(id, (data) => {
        if (once) callbacks.delete(id);
        callback?.(data);
      });
      return id;
    },
    unregisterCallback(id) {
      callbacks.delete(id);
    },
    runCallback(id, data) {
      const callback = callbacks.get(id);
      if (callback === undefined) {
        console.warn(`[TAURI] Couldn't find callback id ${id}.`);
        return;
      }
      callback(data);
    },
    callbacks,
    metadata: { currentWindow: { label: "main" }, currentWebview: { windowLabel: "main", label: "main" } },
  };
  window.__TAURI_INTERNALS__ = internals;
  const stream = new EventSource(`${origin}/channel`);
  stream.onmessage = (message: MessageEvent<string>) => {
    const { id, data } = JSON.parse(message.data) as { id: number; data: unknown };
    internals.runCallback(id, data);
  };
  return new Promise((resolve, reject) => {
    stream.onopen = () => resolve();
    stream.onerror = () => reject(new Error(`the bridge's event stream at ${origin} failed`));
  });
}
