/**
 * Spans of the gpu-service over real gRPC on loopback, with the in-thread engine and the fake model:
 * stage spans are children of the Generate server span, engine steps link to it.
 */
import { GenerationService, Modality } from "@minicpmv/proto";
import { createClient } from "@minicpmv/proto/grpc";
import { startTelemetry, type TelemetryOptions } from "@minicpmv/proto/telemetry";
import { context, trace } from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEngine } from "./engine/engine-handle";
import { FakeModel, fakeTokens } from "./engine/fake-model.test-support";
import { type GpuGrpcServer, startGrpcServer } from "./service";

type Processor = NonNullable<TelemetryOptions["spanProcessors"]>[number];
type Finished = Parameters<Processor["onEnd"]>[0];

const ended: Finished[] = [];
const processor: Processor = {
  onStart() {},
  onEnd(s) {
    ended.push(s);
  },
  forceFlush: async () => {},
  shutdown: async () => {},
};
const telemetry = startTelemetry({ serviceName: "gpu-test", env: {}, spanProcessors: [processor] });

const toMs = (t: [number, number]) => t[0] * 1000 + t[1] / 1e6;

describe("gpu-service spans", () => {
  let server: GpuGrpcServer;
  let local: LocalEngine;
  let client: ReturnType<typeof createClient<typeof GenerationService.method>>;

  beforeAll(async () => {
    server = await startGrpcServer({ host: "127.0.0.1", port: 0, maxMessageBytes: 64 << 20, limits: { maxN: 4 } });
    local = new LocalEngine(new FakeModel({ contextLength: 128 }), fakeTokens, {
      maxBatchTokens: 64,
      maxRunning: 8,
      maxWaiting: 8,
      encoderCacheBytes: 1 << 20,
      enablePrefixCaching: false,
      terminators: [63],
    });
    server.attach(local, { modelName: "tiny-test", tracer: telemetry.tracer });
    server.setServing(true);
    client = createClient(GenerationService, `127.0.0.1:${server.port}`);
  });

  afterAll(async () => {
    client.close();
    await server.stop(1000);
    await local.close();
    await telemetry.shutdown();
  });

  async function generate(requestId: string) {
    // One 14x14 image: 4 placeholder tokens (queryNum 4) at offset 2 of an 8-token prompt.
    const rgb = new Uint8Array(14 * 14 * 3).fill(7);
    const parent = telemetry.tracer.startSpan(`edge ${requestId}`);
    const stream = client.generate(
      {
        requestId,
        prompt: {
          tokenIds: [1, 2, 0, 0, 0, 0, 3, 4],
          media: [
            {
              modality: Modality.IMAGE,
              contentHash: new Uint8Array([9, 9]),
              slices: [{ width: 14, height: 14, rgb, tokenOffset: 2 }],
            },
          ],
          tokenCounts: { text: 4, image: 4, video: 0, total: 8 },
        },
        params: { temperature: 0, repetitionPenalty: 1, maxTokens: 5, ignoreEos: true },
      },
      { metadata: { "x-request-id": requestId }, traceContext: trace.setSpan(context.active(), parent) },
    );
    let tokens = 0;
    for await (const r of stream) if (r.event.case === "token") tokens += r.event.value.tokenIds.length;
    parent.end();
    return { parent, tokens };
  }

  it("records queue, vision, prefill and decode under Generate, and links engine steps to it", async () => {
    ended.length = 0;
    const first = await generate("r1");
    const second = await generate("r2");
    expect([first.tokens, second.tokens]).toEqual([5, 5]);
    await expect.poll(() => ended.filter((s) => s.name.endsWith("/Generate")).length).toBe(2);

    for (const [rid, p, cacheHit] of [
      ["r1", first.parent, false],
      ["r2", second.parent, true],
    ] as const) {
      const traceId = p.spanContext().traceId;
      const inTrace = ended.filter((s) => s.spanContext().traceId === traceId);
      const gen = inTrace.find((s) => s.name === "minicpmv.v1.GenerationService/Generate") as Finished;
      expect(gen.parentSpanContext?.spanId).toBe(p.spanContext().spanId);
      const children = inTrace.filter((s) => s.parentSpanContext?.spanId === gen.spanContext().spanId);
      expect(children.map((s) => s.name).sort()).toEqual([
        "gpu.decode",
        "gpu.prefill",
        "gpu.queue_wait",
        "gpu.vision_encode",
      ]);
      const by = (n: string) => children.find((s) => s.name === n) as Finished;
      for (const c of children) {
        expect(c.attributes).toMatchObject({ "request.id": rid, "gen_ai.request.model": "tiny-test" });
        expect(toMs(c.endTime)).toBeGreaterThanOrEqual(toMs(c.startTime));
        // Worker/engine times fall inside the server span.
        expect(toMs(c.startTime)).toBeGreaterThanOrEqual(toMs(gen.startTime) - 1);
        expect(toMs(c.endTime)).toBeLessThanOrEqual(toMs(gen.endTime) + 1);
      }
      expect(by("gpu.vision_encode").attributes).toMatchObject({ "vision.slices": 1, "vision.cache_hit": cacheHit });
      expect(by("gpu.prefill").attributes).toMatchObject({
        "gen_ai.usage.input_tokens": 8,
        "prompt.cached_tokens": 0,
      });
      expect(by("gpu.decode").attributes).toMatchObject({ "gen_ai.usage.output_tokens": 5 });
      expect(toMs(by("gpu.prefill").startTime)).toBeGreaterThanOrEqual(toMs(by("gpu.queue_wait").endTime) - 0.001);
      expect(toMs(by("gpu.decode").startTime)).toBeCloseTo(toMs(by("gpu.prefill").endTime), 3);

      // Steps: their own traces, each linking to this request's Generate span; one step per token here.
      const steps = ended.filter(
        (s) => s.name === "engine.step" && s.links.some((l) => l.context.spanId === gen.spanContext().spanId),
      );
      expect(steps).toHaveLength(5);
      for (const s of steps) {
        expect(s.spanContext().traceId).not.toBe(traceId);
        expect(s.parentSpanContext).toBeUndefined();
        expect(s.links.map((l) => l.context.traceId)).toEqual([traceId]);
        expect(s.attributes["engine.batch.requests"]).toBe(1);
      }
      expect(steps.map((s) => s.attributes["engine.batch.prefill_seqs"])).toEqual([1, 0, 0, 0, 0]);
      expect(steps.map((s) => s.attributes["engine.batch.tokens"])).toEqual([8, 1, 1, 1, 1]);
    }
  });
});
