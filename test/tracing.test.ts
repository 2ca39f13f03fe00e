/**
 * One request is one trace across the three real services (tiny-a), exported with the standard OTEL_*
 * variables over OTLP/HTTP JSON to a receiver inside the test:
 *
 *   edge  POST /v1/chat/completions                       request.id, gen_ai.request.model
 *     ├─ preprocess  minicpmv.v1.PreprocessService/Prepare
 *     │    ├─ preprocess.fetch_media  (the image is fetched by URL from this test)
 *     │    ├─ preprocess.decode_image, preprocess.slice_resize  (timed in a worker thread)
 *     │    └─ preprocess.tokenize
 *     └─ gpu-service  minicpmv.v1.GenerationService/Generate
 *          └─ gpu.queue_wait, gpu.vision_encode, gpu.prefill, gpu.decode
 *   engine.step (own traces) ──links──> Generate
 */
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "./helpers/otlp-receiver";
import { type Stack, startStack } from "./helpers/stack";

const IMAGE = readFileSync(join(import.meta.dirname, "../../shared/golden/images/img_640x480.png"));

describe("tracing across edge, preprocess and gpu-service", () => {
  let otlp: OtlpReceiver;
  let images: Server;
  let imageUrl: string;
  let stack: Stack;

  beforeAll(async () => {
    otlp = await startOtlpReceiver();
    images = createServer((_req, res) => res.writeHead(200, { "content-type": "image/png" }).end(IMAGE));
    await new Promise<void>((r) => images.listen(0, "127.0.0.1", () => r()));
    imageUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}/cat.png`;
    stack = await startStack({
      env: {
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY: "200",
        LOG_LEVEL: "info",
      },
      preprocessEnv: { MEDIA_URL_ALLOW: "127.0.0.1" },
    });
  });

  afterAll(async () => {
    await stack?.stop();
    await new Promise((r) => images?.close(r));
    await otlp?.close();
  });

  it("records one trace per request with the stage spans, parent links and attributes", async () => {
    const requestId = "trace-test-1";
    const res = await fetch(`${stack.edgeUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": requestId },
      body: JSON.stringify({
        messages: [
          {
            role: "user",
            content: [
              { type: "image_url", image_url: { url: imageUrl } },
              { type: "text", text: "What is in the image?" },
            ],
          },
        ],
        max_tokens: 4,
        temperature: 0,
        ignore_eos: true,
      }),
    });
    const body = (await res.json()) as { model: string; usage: { prompt_tokens: number; completion_tokens: number } };
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.usage.completion_tokens).toBe(4);
    const model = body.model;

    // The edge span ends last; wait until it and the gpu-service's stage spans have been exported.
    const find = (name: string) => otlp.spans.find((s) => s.name === name && s.attributes["request.id"] === requestId);
    await expect
      .poll(() => ["POST /v1/chat/completions", "gpu.decode", "preprocess.tokenize"].every((n) => find(n)), {
        timeout: 30_000,
        interval: 200,
      })
      .toBe(true);

    const root = find("POST /v1/chat/completions") as ReceivedSpan;
    expect(root.service).toBe("edge");
    expect(root.parentSpanId).toBe("");
    expect(root.attributes).toMatchObject({
      "http.request.method": "POST",
      "http.route": "/v1/chat/completions",
      "http.response.status_code": 200,
      "request.id": requestId,
      "gen_ai.request.model": model,
    });
    const trace = otlp.spans.filter((s) => s.traceId === root.traceId);
    const one = (name: string, parent: ReceivedSpan): ReceivedSpan => {
      const found = trace.filter((s) => s.name === name);
      expect(found, name).toHaveLength(1);
      const s = found[0] as ReceivedSpan;
      expect(s.parentSpanId, `${name} parent`).toBe(parent.spanId);
      // A child lies inside its parent (1 ms slack for clocks read on different threads).
      expect(s.startMs, `${name} start`).toBeGreaterThanOrEqual(parent.startMs - 1);
      expect(s.endMs, `${name} end`).toBeLessThanOrEqual(parent.endMs + 1);
      return s;
    };

    const prepare = one("minicpmv.v1.PreprocessService/Prepare", root);
    expect(prepare.service).toBe("preprocess");
    expect(prepare.attributes["request.id"]).toBe(requestId);
    const fetchSpan = one("preprocess.fetch_media", prepare);
    expect(fetchSpan.attributes).toMatchObject({ "media.bytes": IMAGE.length, "url.scheme": "http" });
    const decode = one("preprocess.decode_image", prepare);
    expect(decode.attributes).toMatchObject({ "image.width": 640, "image.height": 480, "request.id": requestId });
    const slice = one("preprocess.slice_resize", prepare);
    expect(slice.attributes).toMatchObject({ "image.width": 640, "image.height": 480, "image.slices": 3 });
    expect(slice.startMs).toBeGreaterThanOrEqual(decode.endMs - 1);
    expect(decode.startMs).toBeGreaterThanOrEqual(fetchSpan.endMs - 1);
    const tokenize = one("preprocess.tokenize", prepare);
    expect(tokenize.attributes["prompt.tokens"]).toBe(body.usage.prompt_tokens);

    const generate = one("minicpmv.v1.GenerationService/Generate", root);
    expect(generate.service).toBe("gpu-service");
    expect(generate.attributes["request.id"]).toBe(requestId);
    expect(generate.startMs).toBeGreaterThanOrEqual(prepare.endMs - 1);
    const gpuAttrs = { "request.id": requestId, "gen_ai.request.model": model };
    const queue = one("gpu.queue_wait", generate);
    const vision = one("gpu.vision_encode", generate);
    const prefill = one("gpu.prefill", generate);
    const decodeGpu = one("gpu.decode", generate);
    for (const s of [queue, vision, prefill, decodeGpu]) expect(s.attributes).toMatchObject(gpuAttrs);
    expect(vision.attributes).toMatchObject({ "vision.slices": 3, "vision.cache_hit": false });
    expect(prefill.attributes).toMatchObject({
      "gen_ai.usage.input_tokens": body.usage.prompt_tokens,
      "prompt.cached_tokens": 0,
    });
    expect(decodeGpu.attributes["gen_ai.usage.output_tokens"]).toBe(4);
    expect(prefill.startMs).toBeGreaterThanOrEqual(queue.endMs - 1);
    expect(decodeGpu.startMs).toBeGreaterThanOrEqual(prefill.endMs - 1);

    // Nothing else of this request escaped into another trace, and the trace holds only these spans.
    expect(otlp.spans.filter((s) => s.attributes["request.id"] === requestId && s.traceId !== root.traceId)).toEqual(
      [],
    );
    expect(trace.map((s) => s.name).sort()).toEqual(
      [
        "POST /v1/chat/completions",
        "minicpmv.v1.PreprocessService/Prepare",
        "preprocess.fetch_media",
        "preprocess.decode_image",
        "preprocess.slice_resize",
        "preprocess.tokenize",
        "minicpmv.v1.GenerationService/Generate",
        "gpu.queue_wait",
        "gpu.vision_encode",
        "gpu.prefill",
        "gpu.decode",
      ].sort(),
    );

    // Engine steps: their own traces, linked to the Generate span (prefill step + one per further token).
    await expect
      .poll(() => otlp.spans.filter((s) => s.links.some((l) => l.spanId === generate.spanId)).length, {
        timeout: 10_000,
      })
      .toBeGreaterThanOrEqual(4);
    const steps = otlp.spans.filter((s) => s.links.some((l) => l.spanId === generate.spanId));
    for (const s of steps) {
      expect(s.name).toBe("engine.step");
      expect(s.service).toBe("gpu-service");
      expect(s.parentSpanId).toBe("");
      expect(s.traceId).not.toBe(root.traceId);
      expect(s.links).toContainEqual({ traceId: root.traceId, spanId: generate.spanId });
      expect(s.startMs).toBeGreaterThanOrEqual(generate.startMs - 1);
      expect(s.endMs).toBeLessThanOrEqual(generate.endMs + 1);
    }
    expect(steps.reduce((n, s) => n + Number(s.attributes["engine.batch.tokens"]), 0)).toBe(
      body.usage.prompt_tokens + 3,
    );

    // Logs of the request carry its trace: preprocess logs one line per Prepare call.
    const line = stack.preprocess
      .output()
      .split("\n")
      .find((l) => l.includes('"msg":"prepared"') && l.includes(requestId));
    expect(line).toBeDefined();
    const rec = JSON.parse(line as string) as { trace_id: string; span_id: string };
    expect(rec.trace_id).toBe(root.traceId);
    expect(rec.span_id).toBe(prepare.spanId);
  });
});
