/**
 * Metrics of the edge, as OpenTelemetry instruments read back in the Prometheus text format on `/metrics`.
 *
 *   edge_http_requests_total{method,route,status}            counter
 *   edge_http_request_duration_seconds{method,route,status}  histogram (to the last byte, streams included)
 *   edge_time_to_first_token_seconds                         histogram (request in -> first token out)
 *   edge_streamed_tokens_total                               counter (tokens sent over SSE)
 *   edge_generated_tokens_total / edge_prompt_tokens_total{modality}  counters
 *   edge_rejected_requests_total{reason}                     counter (auth, rate limits, concurrency, validation, ...)
 *   edge_backend_retries_total{backend}                      counter (Generate retried on another replica)
 *   edge_backend_healthy{backend,service}                    gauge (1 healthy, 0 not)
 *   edge_requests_in_flight                                  gauge
 *   process_resident_memory_bytes, process_cpu_seconds_total (with `processMetrics`)
 */
import { createPrometheusMetrics } from "@minicpmv/proto/telemetry";
import type { Counter, Gauge, Histogram, Meter, UpDownCounter } from "@opentelemetry/api";
import type { RejectReason } from "./errors";

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Where the instruments live and how they are read back (a started Telemetry fits). */
export interface MetricsSource {
  readonly meter: Meter;
  metricsText(): Promise<string>;
}

/** Labels of the HTTP series. */
export type HttpLabels = { method: string; route: string; status: number };

/** The edge's metrics. */
export class EdgeMetrics {
  /** Content type of {@link render}'s text. */
  readonly contentType = "text/plain; version=0.0.4; charset=utf-8";
  readonly httpRequests: Counter<HttpLabels>;
  readonly httpDuration: Histogram<HttpLabels>;
  readonly ttft: Histogram;
  readonly streamedTokens: Counter;
  readonly generatedTokens: Counter;
  readonly promptTokens: Counter<{ modality: string }>;
  readonly rejected: Counter<{ reason: string }>;
  readonly retries: Counter<{ backend: string }>;
  readonly backendHealthy: Gauge<{ backend: string; service: string }>;
  readonly inFlight: UpDownCounter;
  private readonly source: MetricsSource;

  /** `source` defaults to a private registry (unit tests); main.ts passes the process's Telemetry. */
  constructor(opts: { source?: MetricsSource; processMetrics?: boolean } = {}) {
    this.source = opts.source ?? createPrometheusMetrics("edge");
    const m = this.source.meter;
    this.httpRequests = m.createCounter("edge_http_requests_total", {
      description: "HTTP requests by method, route and status",
    });
    this.httpDuration = m.createHistogram("edge_http_request_duration_seconds", {
      description: "HTTP request duration until the last byte, by method, route and status",
      unit: "s",
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    });
    this.ttft = m.createHistogram("edge_time_to_first_token_seconds", {
      description: "Time from receiving a chat request to its first token",
      unit: "s",
      advice: { explicitBucketBoundaries: TTFT_BUCKETS },
    });
    this.streamedTokens = m.createCounter("edge_streamed_tokens_total", {
      description: "Tokens sent to clients over SSE",
    });
    this.generatedTokens = m.createCounter("edge_generated_tokens_total", {
      description: "Completion tokens of finished requests",
    });
    this.promptTokens = m.createCounter("edge_prompt_tokens_total", {
      description: "Prompt tokens of finished requests, by modality",
    });
    this.rejected = m.createCounter("edge_rejected_requests_total", { description: "Requests turned away, by reason" });
    this.retries = m.createCounter("edge_backend_retries_total", {
      description: "Generate calls retried on another replica after this one failed before its first token",
    });
    this.backendHealthy = m.createGauge("edge_backend_healthy", {
      description: "1 when the backend passed its last health check",
    });
    this.inFlight = m.createUpDownCounter("edge_requests_in_flight", { description: "Chat requests being served" });
    if (opts.processMetrics) {
      m.createObservableGauge("process_resident_memory_bytes", {
        description: "Resident memory size in bytes",
        unit: "By",
      }).addCallback((r) => r.observe(process.memoryUsage.rss()));
      m.createObservableCounter("process_cpu_seconds_total", {
        description: "User and system CPU time spent, in seconds",
        unit: "s",
      }).addCallback((r) => {
        const u = process.cpuUsage();
        r.observe((u.user + u.system) / 1e6);
      });
    }
  }

  /** Counts a rejected request. */
  reject(reason: RejectReason): void {
    this.rejected.add(1, { reason });
  }

  /** The text exposition format. */
  render(): Promise<string> {
    return this.source.metricsText();
  }
}
