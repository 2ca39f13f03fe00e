/**
 * Vitest global setup, run once before any test file:
 *   1. generates the tiny-a checkpoint (so test files started in parallel do not race to write it);
 *   2. installs Debian's chromium for the browser tests when /usr/bin/chromium is missing
 *      (scripts/ensure-chromium.sh: apt-get, needs root or sudo; CI runs as root).
 * A chromium install that fails is reported here and again by test/web-chat.test.ts, which needs it;
 * it does not stop the other test files.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ensureTinyCheckpoint } from "../gpu-service/src/checkpoint";
import { CHROMIUM_PATH } from "./web-chat-scenario";

const root = join(import.meta.dirname, "..");

/** Vitest's globalSetup entry point. */
export default async function setup(): Promise<void> {
  const t0 = Date.now();
  const dir = await ensureTinyCheckpoint();
  console.log(`[global-setup] tiny-a checkpoint ready in ${dir} (${Date.now() - t0} ms)`);

  if (existsSync(CHROMIUM_PATH)) return;
  const script = join(root, "scripts/ensure-chromium.sh");
  console.log(`[global-setup] ${CHROMIUM_PATH} is missing: running ${script} (apt-get install chromium)`);
  try {
    execFileSync("bash", [script], { stdio: "inherit", timeout: 600_000 });
    console.log(`[global-setup] chromium installed at ${CHROMIUM_PATH}`);
  } catch (err) {
    console.warn(`[global-setup] could not install chromium (${String(err)}); the browser tests will fail`);
  }
}
