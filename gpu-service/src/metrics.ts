/**
 * Prometheus metrics of one gpu-service replica, named like vLLM's V1 engine metrics (SERVING.md §3.6)
 * with the `minicpmv:` prefix, served as text on `GPU_METRICS_PORT` at `/metrics`.
 *
 * Per-request histograms are observed on the main thread from the event stream (TTFT and inter-token
 * latency as the gRPC server sees them); engine counters and gauges are read from the engine once per
 * scrape.
 */

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EngineStats, FinishReason, Timings, Usage } from "./engine/types";

const LATENCY_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
];
const REQUEST_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960];
const TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

/** Observes one request's stream. */
export interface RequestObserver {
  /** `n` new tokens arrived now. */
  tokens(n: number): void;
  /** The request ended with a final event. */
  finished(usage: Usage, timings: Timings, reasons: FinishReason[]): void;
  /** The request ended with an error. */
  failed(kind: string): void;
}

/** The replica's metrics registry. */
export class GpuMetrics {
  readonly registry = new Registry();
  private readonly ttft: Histogram;
  private readonly itl: Histogram;
  private readonly tpot: Histogram;
  private readonly e2e: Histogram;
  private readonly queue: Histogram;
  private readonly prefill: Histogram;
  private readonly decode: Histogram;
  private readonly vision: Histogram;
  private readonly promptTokensH: Histogram;
  private readonly genTokensH: Histogram;
  private readonly promptTokens: Counter;
  private readonly genTokens: Counter;
  private readonly cachedTokens: Counter;
  private readonly success: Counter;
  private readonly errors: Counter;
  private readonly preemptions: Counter;
  private readonly prefixQueries: Counter;
  private readonly prefixHits: Counter;
  private readonly mmQueries: Counter;
  private readonly mmHits: Counter;
  private readonly running: Gauge;
  private readonly waiting: Gauge;
  private readonly kvUsage: Gauge;
  private last: EngineStats | undefined;

  constructor(modelName: string) {
    this.registry.setDefaultLabels({ model_name: modelName, engine: "0" });
    const reg = [this.registry];
    const h = (name: string, help: string, buckets: number[]) =>
      new Histogram({ name: `minicpmv:${name}`, help, buckets, registers: reg });
    const c = (name: string, help: string, labelNames: string[] = []) =>
      new Counter({ name: `minicpmv:${name}`, help, labelNames, registers: reg });
    const g = (name: string, help: string) => new Gauge({ name: `minicpmv:${name}`, help, registers: reg });
    this.ttft = h("time_to_first_token_seconds", "Time to first token, from the call's arrival.", LATENCY_BUCKETS);
    this.itl = h("inter_token_latency_seconds", "Time between consecutive token events.", LATENCY_BUCKETS);
    this.tpot = h("request_time_per_output_token_seconds", "Decode time per output token.", LATENCY_BUCKETS);
    this.e2e = h("e2e_request_latency_seconds", "End-to-end request latency.", REQUEST_BUCKETS);
    this.queue = h("request_queue_time_seconds", "Time spent waiting to be scheduled.", REQUEST_BUCKETS);
    this.prefill = h(
      "request_prefill_time_seconds",
      "From the first prefill step to the first token.",
      REQUEST_BUCKETS,
    );
    this.decode = h("request_decode_time_seconds", "From the first token to the last.", REQUEST_BUCKETS);
    this.vision = h("request_vision_encode_time_seconds", "Vision tower and resampler time.", REQUEST_BUCKETS);
    this.promptTokensH = h("request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS);
    this.genTokensH = h("request_generation_tokens", "Generated tokens per request.", TOKEN_BUCKETS);
    this.promptTokens = c("prompt_tokens_total", "Prompt tokens of finished requests.");
    this.genTokens = c("generation_tokens_total", "Generated tokens.");
    this.cachedTokens = c("prompt_tokens_cached_total", "Prompt tokens served from the prefix cache.");
    this.success = c("request_success_total", "Finished requests by finish reason.", ["finished_reason"]);
    this.errors = c("request_failure_total", "Failed requests by error kind.", ["kind"]);
    this.preemptions = c("num_preemptions_total", "Requests preempted (KV blocks freed, recomputed later).");
    this.prefixQueries = c("prefix_cache_queries_total", "Tokens looked up in the prefix cache.");
    this.prefixHits = c("prefix_cache_hits_total", "Tokens found in the prefix cache.");
    this.mmQueries = c("mm_cache_queries_total", "Vision-embedding cache lookups.");
    this.mmHits = c("mm_cache_hits_total", "Vision-embedding cache hits.");
    this.running = g("num_requests_running", "Requests running.");
    this.waiting = g("num_requests_waiting", "Requests waiting.");
    this.kvUsage = g("kv_cache_usage_perc", "Fraction of KV blocks in use (1 = full).");
  }

  /** Starts observing one request (arrival = now). */
  observe(): RequestObserver {
    const t0 = performance.now();
    let last: number | undefined;
    return {
      tokens: (n) => {
        if (n <= 0) return;
        const now = performance.now();
        if (last === undefined) this.ttft.observe((now - t0) / 1000);
        else this.itl.observe((now - last) / 1000);
        last = now;
        this.genTokens.inc(n);
      },
      finished: (usage, timings, reasons) => {
        this.e2e.observe((performance.now() - t0) / 1000);
        this.queue.observe(timings.queueMs / 1000);
        this.prefill.observe(timings.prefillMs / 1000);
        this.decode.observe(timings.decodeMs / 1000);
        this.vision.observe(timings.visionEncodeMs / 1000);
        if (usage.completionTokens > 1) this.tpot.observe(timings.decodeMs / 1000 / (usage.completionTokens - 1));
        this.promptTokensH.observe(usage.promptTokens);
        this.genTokensH.observe(usage.completionTokens);
        this.promptTokens.inc(usage.promptTokens);
        this.cachedTokens.inc(usage.cachedPromptTokens);
        for (const r of reasons) this.success.inc({ finished_reason: r });
      },
      failed: (kind) => this.errors.inc({ kind }),
    };
  }

  /** Copies the engine's counters and gauges into the registry. */
  update(s: EngineStats): void {
    const p = this.last;
    const d = (now: number, before: number | undefined) => Math.max(0, now - (before ?? 0));
    this.preemptions.inc(d(s.preemptions, p?.preemptions));
    this.prefixQueries.inc(d(s.prefixCacheQueries, p?.prefixCacheQueries));
    this.prefixHits.inc(d(s.prefixCacheHits, p?.prefixCacheHits));
    this.mmQueries.inc(d(s.encoderCacheQueries, p?.encoderCacheQueries));
    this.mmHits.inc(d(s.encoderCacheHits, p?.encoderCacheHits));
    this.running.set(s.running);
    this.waiting.set(s.waiting);
    this.kvUsage.set(s.kvUsage);
    this.last = s;
  }

  /** Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** Serves `/metrics` over HTTP; `refresh` runs before each scrape. Resolves the bound port. */
export async function serveMetrics(
  metrics: GpuMetrics,
  host: string,
  port: number,
  refresh: () => Promise<void>,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found; try GET /metrics\n");
      return;
    }
    refresh()
      .catch(() => {})
      .then(() => metrics.text())
      .then(
        (body) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(body),
        (err: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(`${String(err)}\n`),
      );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
