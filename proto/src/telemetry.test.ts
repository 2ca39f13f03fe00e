import { context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { afterAll, describe, expect, it } from "vitest";
import { addService, createClient, createServer, listen, shutdown } from "./grpc";
import { GenerationService } from "./index";
import { startTelemetry, tracingRequested } from "./telemetry";

describe("telemetry", () => {
  const spans = new InMemorySpanExporter();
  const processor = new SimpleSpanProcessor(spans);
  const tel = startTelemetry({ serviceName: "test-svc", env: {}, spanProcessors: [processor] });
  afterAll(() => tel.shutdown());

  it("is off unless OTEL_* asks for it", () => {
    expect(tracingRequested({})).toBe(false);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: "otlp" })).toBe(true);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://x" })).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x" })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x", OTEL_SDK_DISABLED: "true" })).toBe(false);
  });

  it("propagates trace context through gRPC metadata: server span is a child of the client span", async () => {
    const server = createServer();
    let handlerTraceId = "";
    addService(server, GenerationService, {
      async *generate() {},
      async info() {
        handlerTraceId = trace.getActiveSpan()?.spanContext().traceId ?? "";
        return { modelName: "m" };
      },
    });
    const port = await listen(server, "127.0.0.1", 0);
    const client = createClient(GenerationService, `127.0.0.1:${port}`);
    const parent = tel.tracer.startSpan("edge-request");
    await context.with(trace.setSpan(context.active(), parent), () => client.info({}));
    parent.end();
    client.close();
    await shutdown(server, 500);
    // Export waits for async resource detection; flush before reading.
    await processor.forceFlush();
    const finished = spans.getFinishedSpans();
    const serverSpan = finished.find((s) => s.name === "minicpmv.v1.GenerationService/Info");
    expect(serverSpan).toBeDefined();
    expect(serverSpan?.spanContext().traceId).toBe(parent.spanContext().traceId);
    expect(serverSpan?.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    expect(handlerTraceId).toBe(parent.spanContext().traceId);
  });

  it("serves metrics in the Prometheus text format", async () => {
    tel.meter.createCounter("test_requests_total", { description: "requests" }).add(3, { kind: "a" });
    const srv = await tel.serveMetrics(0, "127.0.0.1");
    const text = await (await fetch(`http://127.0.0.1:${srv.port}/metrics`)).text();
    await srv.close();
    expect(text).toMatch(/test_requests_total\{kind="a"[^}]*\} 3/);
  });
});
