import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // The webview side runs in a DOM; the sidecar is a real process behind the mocked IPC.
    environment: "happy-dom",
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Each file spawns real processes; one file at a time keeps the timing tests honest on 2 cores.
    fileParallelism: false,
  },
});
