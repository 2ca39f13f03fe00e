import { startTelemetry, type TelemetryOptions } from "@minicpmv/proto/telemetry";
import { trace } from "@opentelemetry/api";
import { afterAll, describe, expect, it } from "vitest";
import { createApp } from "./app";
import { GpuPool } from "./backends/gpu-pool";
import type { CallOpts, GenerateEvent, GenerateInput, PreparedPrompt, PrepareInput } from "./backends/types";
import { loadConfig } from "./config";
import { EdgeMetrics } from "./metrics";
import { FakeGpu, FakePreprocess } from "./testing/fakes";

type Processor = NonNullable<TelemetryOptions["spanProcessors"]>[number];
type Finished = Parameters<Processor["onEnd"]>[0];

/** Collects ended spans in memory. */
function collector(): { processor: Processor; spans: Finished[] } {
  const spans: Finished[] = [];
  return {
    spans,
    processor: {
      onStart() {},
      onEnd(s) {
        spans.push(s);
      },
      forceFlush: async () => {},
      shutdown: async () => {},
    },
  };
}

/** Records the span that is active when the backends are called. */
class SpyPreprocess extends FakePreprocess {
  activeSpanIds: string[] = [];
  override prepare(input: PrepareInput, opts: CallOpts): Promise<PreparedPrompt> {
    this.activeSpanIds.push(trace.getActiveSpan()?.spanContext().spanId ?? "none");
    return super.prepare(input, opts);
  }
}
class SpyGpu extends FakeGpu {
  activeSpanIds: string[] = [];
  override async *generate(input: GenerateInput, opts: CallOpts): AsyncGenerator<GenerateEvent> {
    this.activeSpanIds.push(trace.getActiveSpan()?.spanContext().spanId ?? "none");
    yield* super.generate(input, opts);
  }
}

const { processor, spans } = collector();
const telemetry = startTelemetry({ serviceName: "edge-test", env: {}, spanProcessors: [processor] });
afterAll(() => telemetry.shutdown());

function setup(tracing: boolean) {
  const pre = new SpyPreprocess();
  const gpu = new SpyGpu("gpu-0");
  const app = createApp({
    config: loadConfig({}),
    preprocess: pre,
    pool: new GpuPool([gpu]),
    metrics: new EdgeMetrics(),
    tracer: tracing ? telemetry.tracer : undefined,
    webPage: false,
  });
  return { app, pre, gpu };
}

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN = "00f067aa0ba902b7";
const body = JSON.stringify({ messages: [{ role: "user", content: "hello there" }] });

describe("HTTP server span", () => {
  it.each([false, true])(
    "continues the caller's trace and is active while the backends run (stream=%s)",
    async (stream) => {
      spans.length = 0;
      const s = setup(true);
      const res = await s.app.request("/v1/chat/completions", {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-request-id": "req-42",
          traceparent: `00-${TRACE_ID}-${PARENT_SPAN}-01`,
        },
        body: stream ? JSON.stringify({ ...JSON.parse(body), stream: true }) : body,
      });
      expect(res.status).toBe(200);
      await res.text();
      expect(spans).toHaveLength(1);
      const span = spans[0] as Finished;
      expect(span.name).toBe("POST /v1/chat/completions");
      expect(span.spanContext().traceId).toBe(TRACE_ID);
      expect(span.parentSpanContext?.spanId).toBe(PARENT_SPAN);
      expect(span.attributes).toMatchObject({
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "request.id": "req-42",
        "gen_ai.request.model": "openbmb/MiniCPM-V-2_6",
      });
      expect(s.pre.activeSpanIds).toEqual([span.spanContext().spanId]);
      expect(s.gpu.activeSpanIds).toEqual([span.spanContext().spanId]);
    },
  );

  it("starts a new trace without traceparent and marks 5xx answers as errors", async () => {
    spans.length = 0;
    const s = setup(true);
    s.gpu.up = false;
    const res = await s.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    expect(res.status).toBe(503);
    expect(spans).toHaveLength(1);
    const span = spans[0] as Finished;
    expect(span.parentSpanContext).toBeUndefined();
    expect(span.attributes["http.response.status_code"]).toBe(503);
    expect(span.status.code).toBe(2); // SpanStatusCode.ERROR
  });

  it("records no span and sets no active span without a tracer", async () => {
    spans.length = 0;
    const s = setup(false);
    const res = await s.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${TRACE_ID}-${PARENT_SPAN}-01` },
      body,
    });
    expect(res.status).toBe(200);
    expect(spans).toHaveLength(0);
    expect(s.pre.activeSpanIds).toEqual(["none"]);
  });
});
