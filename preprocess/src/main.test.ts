import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PreprocessService, Role } from "@minicpmv/proto";
import { createClient } from "@minicpmv/proto/grpc";
import { Health, ServingStatus } from "@minicpmv/proto/health";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

describe("main.ts as a process", () => {
  const modelDir = mkdtempSync(join(tmpdir(), "preprocess-main-")); // empty: built-in tokenizer, reference defaults
  let child: ChildProcess | undefined;
  afterAll(() => {
    if (child && child.exitCode === null) child.kill("SIGKILL");
    rmSync(modelDir, { recursive: true, force: true });
  });

  it("serves Prepare and health, then exits 0 on SIGTERM", async () => {
    child = spawn(process.execPath, ["--import", "tsx", "preprocess/src/main.ts"], {
      cwd: ROOT,
      env: {
        ...process.env,
        PREPROCESS_PORT: "0",
        PREPROCESS_METRICS_PORT: "0",
        PREPROCESS_WORKERS: "1",
        MODEL_DIR: modelDir,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const proc = child;
    const lines: Record<string, unknown>[] = [];
    const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
      let buf = "";
      proc.stdout?.on("data", (d: Buffer) => {
        buf += d.toString();
        for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
          const line = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
          buf = buf.slice(i + 1);
          lines.push(line);
          if (line.msg === "ready") resolve(line);
        }
      });
      proc.once("exit", (code) => reject(new Error(`exited early with ${code}`)));
    });
    const info = await ready;
    const address = `127.0.0.1:${info.port as number}`;
    const health = createClient(Health, address);
    expect((await health.check({ service: "minicpmv.v1.PreprocessService" })).status).toBe(ServingStatus.SERVING);
    health.close();
    const client = createClient(PreprocessService, address);
    const res = await client.prepare({
      messages: [{ role: Role.USER, parts: [{ part: { case: "text", value: "What is 2 plus 2?" } }] }],
      addGenerationPrompt: true,
    });
    client.close();
    expect(res.prompt?.tokenIds).toHaveLength(27);
    const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
    proc.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(lines.some((l) => l.msg === "stopped")).toBe(true);
  });
});
