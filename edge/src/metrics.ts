/**
 * Prometheus metrics of the edge (prom-client, one registry per app so tests do not share state).
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
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { RejectReason } from "./errors";

/** The edge's metrics. */
export class EdgeMetrics {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({
    name: "edge_http_requests_total",
    help: "HTTP requests by method, route and status",
    labelNames: ["method", "route", "status"] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: "edge_http_request_duration_seconds",
    help: "HTTP request duration until the last byte, by method, route and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  });
  readonly ttft = new Histogram({
    name: "edge_time_to_first_token_seconds",
    help: "Time from receiving a chat request to its first token",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly streamedTokens = new Counter({
    name: "edge_streamed_tokens_total",
    help: "Tokens sent to clients over SSE",
    registers: [this.registry],
  });
  readonly generatedTokens = new Counter({
    name: "edge_generated_tokens_total",
    help: "Completion tokens of finished requests",
    registers: [this.registry],
  });
  readonly promptTokens = new Counter({
    name: "edge_prompt_tokens_total",
    help: "Prompt tokens of finished requests, by modality",
    labelNames: ["modality"] as const,
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: "edge_rejected_requests_total",
    help: "Requests turned away, by reason",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly retries = new Counter({
    name: "edge_backend_retries_total",
    help: "Generate calls retried on another replica after this one failed before its first token",
    labelNames: ["backend"] as const,
    registers: [this.registry],
  });
  readonly backendHealthy = new Gauge({
    name: "edge_backend_healthy",
    help: "1 when the backend passed its last health check",
    labelNames: ["backend", "service"] as const,
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: "edge_requests_in_flight",
    help: "Chat requests being served",
    registers: [this.registry],
  });

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** Counts a rejected request. */
  reject(reason: RejectReason): void {
    this.rejected.inc({ reason });
  }

  /** The text exposition format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
