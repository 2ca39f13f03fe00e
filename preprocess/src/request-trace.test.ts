import { startTelemetry, type TelemetryOptions } from "@minicpmv/proto/telemetry";
import { context, trace } from "@opentelemetry/api";
import { afterAll, describe, expect, it } from "vitest";
import { WorkerPool } from "./pool";
import { prepare } from "./prepare";
import { goldenBytes, testDeps } from "./testing/fixtures";

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
const telemetry = startTelemetry({ serviceName: "preprocess-test", env: {}, spanProcessors: [processor] });
const pool = new WorkerPool(1);
afterAll(async () => {
  await pool.close();
  await telemetry.shutdown();
});

describe("preprocess spans", () => {
  it("records decode and slice (timed in the worker) and tokenize under the active span", async () => {
    ended.length = 0;
    const parent = telemetry.tracer.startSpan("Prepare");
    const before = Date.now();
    const out = await context.with(trace.setSpan(context.active(), parent), () =>
      prepare(
        {
          requestId: "req-7",
          messages: [
            {
              role: "user",
              parts: [
                { type: "image", source: { data: goldenBytes("images/img_640x480.png") } },
                { type: "text", text: "What is 2 plus 2?" },
              ],
            },
          ],
          addGenerationPrompt: true,
        },
        testDeps({ tracer: telemetry.tracer }, pool),
      ),
    );
    parent.end();
    const after = Date.now();
    expect(out.tokenIds).toHaveLength(229);
    const byName = new Map(ended.map((s) => [s.name, s]));
    expect([...byName.keys()].sort()).toEqual([
      "Prepare",
      "preprocess.decode_image",
      "preprocess.slice_resize",
      "preprocess.tokenize",
    ]);
    const pid = parent.spanContext().spanId;
    for (const name of ["preprocess.decode_image", "preprocess.slice_resize", "preprocess.tokenize"]) {
      const s = byName.get(name) as Finished;
      expect(s.parentSpanContext?.spanId).toBe(pid);
      expect(s.spanContext().traceId).toBe(parent.spanContext().traceId);
      expect(s.attributes["request.id"]).toBe("req-7");
      // Worker-measured times land inside the call, in the main thread's clock.
      const startMs = s.startTime[0] * 1000 + s.startTime[1] / 1e6;
      const endMs = s.endTime[0] * 1000 + s.endTime[1] / 1e6;
      expect(startMs).toBeGreaterThanOrEqual(before - 1);
      expect(endMs).toBeLessThanOrEqual(after + 1);
      expect(endMs).toBeGreaterThanOrEqual(startMs);
    }
    expect(byName.get("preprocess.slice_resize")?.attributes).toMatchObject({
      "image.width": 640,
      "image.height": 480,
      "image.slices": 3,
      "image.grid": "2x1",
      "media.field": "messages[0].parts[0].image",
    });
    expect(byName.get("preprocess.decode_image")?.attributes).toMatchObject({
      "image.width": 640,
      "image.height": 480,
    });
    expect(byName.get("preprocess.tokenize")?.attributes).toMatchObject({ "prompt.tokens": 229 });
  });

  it("records nothing without a tracer", async () => {
    ended.length = 0;
    await prepare(
      { messages: [{ role: "user", parts: [{ type: "text", text: "hi" }] }], addGenerationPrompt: true },
      testDeps(),
    );
    expect(ended).toHaveLength(0);
  });
});
