/**
 * Issue 9 acceptance: three gpu-service processes on loopback behind one edge.
 *
 *   30 requests (waves of concurrent ones) ─> edge ─least load─> replicas 0, 1, 2: each serves some
 *   a long stream runs on replica k ─> SIGTERM k ─> k drains: the stream completes, k exits 0;
 *   requests sent during and after the drain all succeed, on the other two
 *
 * Which replica served what is read from each replica's own Prometheus metrics (GPU_METRICS_PORT).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gpuMetric, scrape } from "./helpers/metrics";
import { type ChatResult, chat } from "./helpers/sse";
import { type ServiceProc, type Stack, startStack, stopStackChecked } from "./helpers/stack";

const served = async (g: ServiceProc) => gpuMetric(await scrape(g.metricsPort as number), "request_success");

/** `count` short requests at once, half of them streamed. */
function wave(stack: Stack, count: number, tag: string): Promise<ChatResult[]> {
  return Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        chat(stack.edgeUrl, {
          model: "tiny-a",
          messages: [{ role: "user", content: `${tag} request ${i}` }],
          max_tokens: 3,
          ignore_eos: true,
          stream: i % 2 === 0,
          ...(i % 2 === 0 ? { stream_options: { include_usage: true } } : {}),
        }).result,
    ),
  );
}

function expectAllOk(results: ChatResult[]): void {
  expect(results.map((r) => [r.status, r.error, r.finishReason, r.usage?.completion_tokens])).toEqual(
    results.map(() => [200, undefined, "length", 3]),
  );
  for (const [i, r] of results.entries()) if (i % 2 === 0) expect(r.done).toBe(true);
}

describe("three gpu-service replicas behind one edge", () => {
  let stack: Stack;

  beforeAll(async () => {
    // A long drain window: the in-flight stream must finish, not be cut at the default 10 s.
    stack = await startStack({ gpuReplicas: 3, gpuEnv: { SHUTDOWN_GRACE_MS: "120000" } });
  });

  afterAll(async () => {
    await stopStackChecked(stack);
  });

  it("spreads 30 requests over all three replicas", async () => {
    const before = await Promise.all(stack.gpus.map(served));
    const results: ChatResult[] = [];
    for (const tag of ["a", "b", "c"]) results.push(...(await wave(stack, 10, tag)));
    expectAllOk(results);
    const after = await Promise.all(stack.gpus.map(served));
    const perReplica = after.map((n, i) => n - (before[i] ?? 0));
    expect(perReplica.reduce((x, y) => x + y, 0)).toBe(30);
    for (const n of perReplica) expect(n).toBeGreaterThanOrEqual(1);
  });

  it("drains a replica on SIGTERM: its stream completes, it exits 0, no request fails", async () => {
    const long = chat(stack.edgeUrl, {
      model: "tiny-a",
      messages: [{ role: "user", content: "A long answer, please." }],
      max_tokens: 120,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    });
    await long.firstToken;
    const running = await Promise.all(
      stack.gpus.map(async (g) => gpuMetric(await scrape(g.metricsPort as number), "num_requests_running")),
    );
    expect(running.filter((n) => n === 1)).toHaveLength(1);
    const k = running.indexOf(1);
    const draining = stack.gpus[k] as ServiceProc;
    const others = stack.gpus.filter((_, i) => i !== k);

    const exited = new Promise<number | null>((resolve) => draining.proc.once("exit", (code) => resolve(code)));
    draining.proc.kill("SIGTERM");
    // Sent while the replica drains: it refuses new calls and the edge routes them to the other two (a call
    // that reached it before its listener closed is still served: either way, no request fails).
    const during = await wave(stack, 6, "during");

    const stream = await long.result;
    expect([stream.status, stream.error, stream.finishReason, stream.usage?.completion_tokens, stream.done]).toEqual([
      200,
      undefined,
      "length",
      120,
      true,
    ]);
    expect(await exited).toBe(0);
    expectAllOk(during);

    const othersBefore = await Promise.all(others.map(served));
    const later = await wave(stack, 6, "later");
    expectAllOk(later);
    const othersAfter = await Promise.all(others.map(served));
    expect(othersAfter.map((n, i) => n - (othersBefore[i] ?? 0)).reduce((x, y) => x + y, 0)).toBe(6);

    const health = (await (await fetch(`${stack.edgeUrl}/health`)).json()) as {
      gpu_service: { address: string; healthy: boolean }[];
    };
    expect(health.gpu_service.map((g) => g.healthy)).toEqual(stack.gpus.map((_, i) => i !== k));
  });
});
