/**
 * Issue 7 acceptance: one of two real gpu-service processes is killed (SIGKILL) mid-run.
 *
 *   edge ──┬── victim   (MAX_RUNNING_SEQS=1): S1 streaming tokens; R2 and S3 queued, no token yet
 *          └── survivor
 *   kill -9 victim ─> S1: its tokens, an error event, [DONE]
 *                     R2, S3: retried on the survivor, complete normally
 *                     R4 (sent after the kill): served by the survivor
 *
 * To put all three requests on the victim, the survivor is paused (SIGSTOP) until the edge's health poll
 * marks it unhealthy, and resumed (SIGCONT) once they are placed. Every request has a timeout: none may hang.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gpuMetric, scrape } from "./helpers/metrics";
import { chat } from "./helpers/sse";
import { type ServiceProc, type Stack, startStack, stopStackChecked } from "./helpers/stack";

interface EdgeHealth {
  gpu_service: { address: string; healthy: boolean }[];
}

async function edgeSees(stack: Stack, gpu: ServiceProc, healthy: boolean): Promise<void> {
  const address = `127.0.0.1:${gpu.port}`;
  await expect
    .poll(
      async () => {
        const h = (await (await fetch(`${stack.edgeUrl}/health`)).json()) as EdgeHealth;
        return h.gpu_service.find((g) => g.address === address)?.healthy;
      },
      { timeout: 30_000, interval: 200 },
    )
    .toBe(healthy);
}

describe("failover between two gpu-service processes", () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({
      gpuReplicas: 2,
      gpuEnvs: [{ MAX_RUNNING_SEQS: "1" }, {}],
      edgeEnv: { REQUEST_TIMEOUT_MS: "120000" },
    });
  });

  afterAll(async () => {
    if (!stack) return;
    for (const g of stack.gpus) if (g.proc.exitCode === null && g.proc.signalCode === null) g.proc.kill("SIGCONT");
    await stopStackChecked(stack);
  });

  it("retries requests without a token on the survivor, ends started streams with an error event, hangs nothing", async () => {
    const [victim, survivor] = stack.gpus as [ServiceProc, ServiceProc];
    const prompt = (text: string) => [{ role: "user", content: text }];

    survivor.proc.kill("SIGSTOP");
    await edgeSees(stack, survivor, false);

    // S1 runs on the victim and streams; with one running sequence allowed, R2 and S3 wait in its queue.
    const s1 = chat(stack.edgeUrl, {
      model: "tiny-a",
      messages: prompt("Tell me everything."),
      max_tokens: 4000,
      ignore_eos: true,
      stream: true,
    });
    await s1.firstToken;
    const r2 = chat(stack.edgeUrl, {
      model: "tiny-a",
      messages: prompt("Short one."),
      max_tokens: 8,
      ignore_eos: true,
    });
    const s3 = chat(stack.edgeUrl, {
      model: "tiny-a",
      messages: prompt("Another short one."),
      max_tokens: 8,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    });
    await expect
      .poll(async () => gpuMetric(await scrape(victim.metricsPort as number), "num_requests_waiting"), {
        timeout: 30_000,
        interval: 200,
      })
      .toBe(2);
    expect(gpuMetric(await scrape(victim.metricsPort as number), "num_requests_running")).toBe(1);

    survivor.proc.kill("SIGCONT");
    await edgeSees(stack, survivor, true);
    const survivorBefore = gpuMetric(await scrape(survivor.metricsPort as number), "request_success");

    victim.proc.kill("SIGKILL");

    // The started stream: some tokens, then one error event naming the replica, then [DONE].
    const a = await s1.result;
    expect(a.status).toBe(200);
    expect(a.text.length).toBeGreaterThan(0);
    expect(a.finishReason).toBeUndefined();
    expect(a.events.at(-1)).toMatchObject({ error: { message: expect.stringContaining(`127.0.0.1:${victim.port}`) } });
    expect(a.events.filter((e) => "error" in e)).toHaveLength(1);
    expect(a.done).toBe(true);

    // The queued ones had no token yet: retried on the survivor, complete.
    const b = await r2.result;
    expect([b.status, b.error, b.finishReason, b.usage?.completion_tokens]).toEqual([200, undefined, "length", 8]);
    const c = await s3.result;
    expect([c.status, c.error, c.finishReason, c.usage?.completion_tokens, c.done]).toEqual([
      200,
      undefined,
      "length",
      8,
      true,
    ]);

    // After the kill, new requests go to the survivor.
    const d = await chat(stack.edgeUrl, { model: "tiny-a", messages: prompt("And now?"), max_tokens: 4 }).result;
    expect([d.status, d.error]).toEqual([200, undefined]);
    expect(gpuMetric(await scrape(survivor.metricsPort as number), "request_success") - survivorBefore).toBe(3);

    const health = (await (await fetch(`${stack.edgeUrl}/health`)).json()) as EdgeHealth;
    expect(health.gpu_service.map((g) => g.healthy)).toEqual([false, true]);
  });
});
