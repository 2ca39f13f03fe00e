/**
 * OpenTelemetry for every service: Prometheus metrics (always on, served on `/metrics`) and traces
 * (off unless the standard OTEL_* variables ask for an exporter; with tracing off the API calls are
 * no-ops and cost nothing measurable).
 *
 * Trace context crosses process boundaries explicitly: the gRPC adapter (grpc.ts) injects W3C
 * `traceparent` into call metadata and extracts it on the server; the edge extracts it from HTTP
 * headers. No monkey-patching instrumentation is loaded.
 */
import { createServer, type Server } from "node:http";
import { isSpanContextValid, type Meter, metrics, type Tracer, trace } from "@opentelemetry/api";
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { MeterProvider } from "@opentelemetry/sdk-metrics";
import { NodeSDK } from "@opentelemetry/sdk-node";
import type { SpanProcessor } from "@opentelemetry/sdk-trace-base";

/** Whether the environment asks for traces (OTEL_TRACES_EXPORTER or an OTLP endpoint, and the SDK not disabled). */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.OTEL_SDK_DISABLED === "true") return false;
  const exporter = env.OTEL_TRACES_EXPORTER?.trim();
  if (exporter) return exporter !== "none";
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/**
 * pino `mixin`: `trace_id` and `span_id` of the active span, so every log line written while a request
 * is being served carries its trace. Empty outside a request (and always when tracing is off).
 */
export function traceLogFields(): { trace_id?: string; span_id?: string } {
  const sc = trace.getActiveSpan()?.spanContext();
  if (!sc || !isSpanContextValid(sc)) return {};
  return { trace_id: sc.traceId, span_id: sc.spanId };
}

/** Options for {@link startTelemetry}. */
export interface TelemetryOptions {
  /** service.name of traces and metrics (OTEL_SERVICE_NAME wins when set). */
  serviceName: string;
  /** Environment to read OTEL_* from. */
  env?: NodeJS.ProcessEnv;
  /** Extra span processors (tests use an in-memory exporter); they turn tracing on. */
  spanProcessors?: SpanProcessor[];
}

/** A started telemetry setup. */
export interface Telemetry {
  /** Whether spans are recorded and exported. */
  readonly tracing: boolean;
  /** The service's tracer. */
  readonly tracer: Tracer;
  /** The service's meter (instruments show up on /metrics). */
  readonly meter: Meter;
  /** Current metrics in the Prometheus text format. */
  metricsText(): Promise<string>;
  /**
   * Serves `GET /metrics` on its own HTTP port (port 0 picks one), and `GET <path>` for each of `routes`
   * (JSON: the route's status and body); resolves the bound port.
   */
  serveMetrics(
    port: number,
    host?: string,
    routes?: Record<string, () => { status: number; body: unknown }>,
  ): Promise<{ port: number; close(): Promise<void> }>;
  /** Flushes and stops exporters. */
  shutdown(): Promise<void>;
}

/** A meter whose instruments are read back as Prometheus text; no globals touched. */
export interface PrometheusMetrics {
  readonly meter: Meter;
  readonly provider: MeterProvider;
  /** Current metrics in the Prometheus text format. */
  metricsText(): Promise<string>;
}

/**
 * A private MeterProvider with a pull-only Prometheus exporter. startTelemetry uses one per process;
 * unit tests use their own so that instruments of different tests never share state.
 */
export function createPrometheusMetrics(serviceName: string): PrometheusMetrics {
  const resource = resourceFromAttributes({ "service.name": serviceName });
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({ resource, readers: [exporter] });
  // NOTE: without the otel_scope_* labels: each service has one meter, and the series stay exactly as
  // operators' dashboards and alerts know them (`edge_rejected_requests_total{reason="auth"}`).
  const serializer = new PrometheusSerializer(undefined, false, undefined, false, true);
  return {
    meter: provider.getMeter(serviceName),
    provider,
    async metricsText() {
      const { resourceMetrics } = await exporter.collect();
      return vllmNames(serializer.serialize(resourceMetrics));
    },
  };
}

/**
 * Writes instruments named `vllm_*` as `vllm:*`, vLLM's own metric names (Prometheus allows `:` in names;
 * OpenTelemetry instrument names do not), so vLLM's dashboards, alerts and autoscaling rules find them.
 */
export function vllmNames(text: string): string {
  return text.replace(/^(# (?:HELP|TYPE|UNIT) )?vllm_/gm, "$1vllm:");
}

/** Starts metrics and (when requested) tracing for one service process. */
export function startTelemetry(opts: TelemetryOptions): Telemetry {
  const env = opts.env ?? process.env;
  const serviceName = env.OTEL_SERVICE_NAME || opts.serviceName;
  const resource = resourceFromAttributes({ "service.name": serviceName });
  const prom = createPrometheusMetrics(serviceName);
  const meterProvider = prom.provider;
  // NOTE: the global provider can be set once per process; `meter` below is this provider's own, so a
  // second startTelemetry (tests) still reads back what it records.
  metrics.setGlobalMeterProvider(meterProvider);

  const tracing = tracingRequested(env) || (opts.spanProcessors?.length ?? 0) > 0;
  let sdk: NodeSDK | undefined;
  if (tracing) {
    sdk = new NodeSDK({
      serviceName,
      resource,
      instrumentations: [],
      ...(opts.spanProcessors ? { spanProcessors: opts.spanProcessors } : {}),
    });
    sdk.start();
  }
  const servers: Server[] = [];

  const metricsText = prom.metricsText;

  return {
    tracing,
    tracer: trace.getTracer(serviceName),
    meter: prom.meter,
    metricsText,
    async serveMetrics(port, host = "0.0.0.0", routes = {}) {
      const server = createServer((req, res) => {
        const route = req.method === "GET" ? routes[(req.url ?? "").split("?")[0] as string] : undefined;
        if (route) {
          const { status, body } = route();
          res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
          return;
        }
        if (req.method !== "GET" || !req.url?.startsWith("/metrics")) {
          res.writeHead(404).end("not found\n");
          return;
        }
        metricsText().then(
          (text) => res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(text),
          (err: unknown) => res.writeHead(500).end(String(err)),
        );
      });
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => resolve());
      });
      const addr = server.address();
      return {
        port: typeof addr === "object" && addr ? addr.port : port,
        close: () => new Promise<void>((r) => server.close(() => r())),
      };
    },
    async shutdown() {
      for (const s of servers) s.close();
      await Promise.allSettled([meterProvider.shutdown(), sdk?.shutdown()]);
    },
  };
}
