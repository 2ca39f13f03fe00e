/**
 * Class 8 of issue 13 on real processes (tiny-a): shutdown drains, a silent stream ends with an error event,
 * and the `npm start` supervisor handles SIGTERM and restarts a crashed backend.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { alive, freePorts } from "../helpers/ports";
import { chat } from "../helpers/sse";
import { type Stack, startStack, stopProc, stopStackChecked } from "../helpers/stack";

const root = join(import.meta.dirname, "../..");
const user = (text: string) => [{ role: "user", content: text }];

describe("the edge drains on SIGTERM", () => {
  let stack: Stack | undefined;
  afterAll(async () => {
    for (const g of stack?.gpus ?? []) if (g.proc.exitCode === null) g.proc.kill("SIGCONT");
    await stopStackChecked(stack);
  });

  it("stops accepting, lets a stream finish within the grace, ends a longer one with an error event and [DONE]", {
    timeout: 400_000,
  }, async () => {
    stack = await startStack({ edgeEnv: { SHUTDOWN_GRACE_MS: "4000" } });
    const url = stack.edgeUrl;
    // A stream that outlives the grace period, and one that fits in it.
    const long = chat(url, { messages: user("long"), max_tokens: 30_000, ignore_eos: true, stream: true });
    await long.firstToken;
    const short = chat(url, { messages: user("short"), max_tokens: 30, ignore_eos: true, stream: true });
    await short.firstToken;
    const exited = stopProc(stack.edge, 60_000);
    // New connections are refused at once.
    await expect
      .poll(
        async () =>
          fetch(`${url}/health`).then(
            () => "served",
            () => "refused",
          ),
        { timeout: 10_000 },
      )
      .toBe("refused");
    const s = await short.result;
    expect([s.status, s.error, s.finishReason, s.done]).toEqual([200, undefined, "length", true]);
    const l = await long.result;
    expect(l.status).toBe(200);
    expect(l.text.length).toBeGreaterThan(0);
    expect(l.events.at(-1)).toMatchObject({ error: { code: 503, message: expect.stringMatching(/shutting down/) } });
    expect(l.done).toBe(true);
    expect(await exited).toBe(0);
  });
});

describe("a stream with no token for STREAM_STALL_TIMEOUT_MS", () => {
  let stack: Stack | undefined;
  afterAll(async () => {
    for (const g of stack?.gpus ?? []) if (g.proc.exitCode === null) g.proc.kill("SIGCONT");
    await stopStackChecked(stack);
  });

  it("ends with an error event and [DONE] when its replica stops answering", { timeout: 400_000 }, async () => {
    stack = await startStack({ edgeEnv: { STREAM_STALL_TIMEOUT_MS: "3000", GPU_EJECT_AFTER_FAILURES: "1000" } });
    const gpu = stack.gpus[0] as NonNullable<Stack["gpus"][0]>;
    const call = chat(stack.edgeUrl, { messages: user("go"), max_tokens: 30_000, ignore_eos: true, stream: true });
    await call.firstToken;
    gpu.proc.kill("SIGSTOP");
    const r = await call.result;
    gpu.proc.kill("SIGCONT");
    expect(r.events.at(-1)).toMatchObject({
      error: { code: 504, message: expect.stringMatching(/no token for 3000 ms/) },
    });
    expect(r.done).toBe(true);
  });
});

/** Lines the supervisor logged (its own JSON lines only). */
function startLines(out: string): Record<string, unknown>[] {
  return out
    .split("\n")
    .filter((l) => l.includes('"service":"start"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("npm start supervisor", () => {
  let proc: ChildProcess | undefined;
  afterAll(() => {
    if (proc && proc.exitCode === null) proc.kill("SIGKILL");
  });

  it("restarts a crashed backend with backoff (/health shows the gap) and stops everything on SIGTERM", async () => {
    const [pre, gpu, edge, metrics] = (await freePorts(4)) as [number, number, number, number];
    const p = spawn(process.execPath, ["--import", "tsx", join(root, "scripts/start.ts")], {
      cwd: root,
      env: {
        ...process.env,
        PREPROCESS_PORT: String(pre),
        GPU_SERVICE_PORT: String(gpu),
        GPU_METRICS_PORT: String(metrics),
        PREPROCESS_METRICS_PORT: "0",
        PORT: String(edge),
        LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    proc = p;
    let out = "";
    p.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.stderr?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    await expect
      .poll(() => startLines(out).find((l) => l.msg === "ready"), { timeout: 280_000, interval: 500 })
      .toBeDefined();
    const ready = startLines(out).find((l) => l.msg === "ready") as { pids: Record<string, number> };
    const url = `http://127.0.0.1:${edge}`;
    expect((await fetch(`${url}/health`)).status).toBe(200);

    process.kill(ready.pids.preprocess as number, "SIGKILL");
    // The gap: /health says so while preprocess is down...
    await expect.poll(async () => (await fetch(`${url}/health`)).status, { timeout: 30_000, interval: 100 }).toBe(503);
    // ...and the supervisor brings it back instead of stopping the stack.
    await expect
      .poll(() => startLines(out).find((l) => l.msg === "restarted"), { timeout: 120_000, interval: 500 })
      .toMatchObject({ service_name: "preprocess" });
    await expect.poll(async () => (await fetch(`${url}/health`)).status, { timeout: 120_000, interval: 500 }).toBe(200);
    const restarted = startLines(out).find((l) => l.msg === "restarted") as { pid: number };
    expect(startLines(out).find((l) => l.msg === "a service exited unexpectedly; restarting it")).toMatchObject({
      service_name: "preprocess",
      delay_ms: 1000,
    });
    const r = chat(url, { messages: user("back?"), max_tokens: 4 });
    expect((await r.result).status).toBe(200);

    const code = await new Promise<number | null>((resolve) => {
      p.once("exit", (c) => resolve(c));
      p.kill("SIGTERM");
    });
    expect(code).toBe(0);
    for (const pid of [ready.pids.edge, ready.pids["gpu-service"], restarted.pid] as number[]) {
      expect(alive(pid)).toBe(false);
    }
  }, 400_000);
});
