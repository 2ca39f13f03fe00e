import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["{proto,preprocess,gpu-service,edge,test,scripts}/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/.cache/**"],
    // Once per run: the tiny-a checkpoint, and chromium for the browser tests when it is missing.
    globalSetup: ["test/global-setup.ts"],
    // Tests must pass on a loaded 2-core machine: generous timeouts, no timing assertions.
    testTimeout: 120_000,
    hookTimeout: 300_000,
    reporters: ["default", "./scripts/summary-reporter.ts"],
    pool: "forks",
    maxWorkers: 2,
  },
});
