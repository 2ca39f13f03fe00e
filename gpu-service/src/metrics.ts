/**
 * Metrics of one gpu-service replica as OpenTelemetry instruments under vLLM's V1 engine names
 * (`vllm:num_requests_waiting`, ..., SERVING.md §3.6), so vLLM's dashboards, alerts and autoscaling rules
 * work unchanged; every series is labelled `model_name` and `engine`. Metrics vLLM does not have keep this
 * project's `minicpmv_` prefix. main.ts serves them on `GPU_METRICS_PORT` at `/metrics`.
 *
 * NOTE: OpenTelemetry instrument names cannot hold `:`; the instruments are named `vllm_*` and the
 * Prometheus text writer (`createPrometheusMetrics`) turns that prefix into `vllm:`.
 *
 * Per-request histograms and counters are recorded on the main thread from the event stream (TTFT and
 * inter-token latency as the gRPC server sees them); engine counters and gauges are read from the engine
 * once per scrape (an observable callback asks the worker for its stats).
 */

import { createPrometheusMetrics } from "@minicpmv/proto/telemetry";
import type { Attributes, Counter, Histogram, Meter } from "@opentelemetry/api";
import type { EngineStats, FinishReason, Timings, Usage } from "./engine/types";

/** Instrument-name prefix written as `vllm:` on /metrics (see the NOTE above). */
const VLLM = "vllm_";

const LATENCY_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
];
const REQUEST_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960];
const TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

/** Where the instruments live and how they are read back (a started Telemetry fits). */
export interface MetricsSource {
  readonly meter: Meter;
  metricsText(): Promise<string>;
}

/** Observes one request's stream. */
export interface RequestObserver {
  /** `n` new tokens arrived now. */
  tokens(n: number): void;
  /** The request ended with a final event. */
  finished(usage: Usage, timings: Timings, reasons: FinishReason[]): void;
  /** The request ended with an error. */
  failed(kind: string): void;
}

/** The replica's metrics. */
export class GpuMetrics {
  /** Content type of {@link text}. */
  readonly contentType = "text/plain; version=0.0.4; charset=utf-8";
  private readonly source: MetricsSource;
  private readonly labels: Attributes;
  private readonly ttft: Histogram;
  private readonly itl: Histogram;
  private readonly tpot: Histogram;
  private readonly e2e: Histogram;
  private readonly queue: Histogram;
  private readonly prefill: Histogram;
  private readonly decode: Histogram;
  private readonly inference: Histogram;
  private readonly vision: Histogram;
  private readonly promptTokensH: Histogram;
  private readonly genTokensH: Histogram;
  private readonly promptTokens: Counter;
  private readonly genTokens: Counter;
  private readonly cachedTokens: Counter;
  private readonly success: Counter;
  private readonly errors: Counter;
  private watching = false;

  /** `source` defaults to a private registry (unit tests); main.ts passes the process's Telemetry. */
  constructor(modelName: string, opts: { source?: MetricsSource } = {}) {
    this.source = opts.source ?? createPrometheusMetrics("gpu-service");
    this.labels = { model_name: modelName, engine: "0" };
    const m = this.source.meter;
    const h = (name: string, description: string, buckets: number[], unit?: string) =>
      m.createHistogram(name.startsWith("minicpmv_") ? name : `${VLLM}${name}`, {
        description,
        ...(unit ? { unit } : {}),
        advice: { explicitBucketBoundaries: buckets },
      });
    const c = (name: string, description: string) =>
      m.createCounter(name.startsWith("minicpmv_") ? name : `${VLLM}${name}`, { description });
    this.ttft = h("time_to_first_token_seconds", "Time to first token, from the call's arrival.", LATENCY_BUCKETS, "s");
    this.itl = h("inter_token_latency_seconds", "Time between consecutive token events.", LATENCY_BUCKETS, "s");
    this.tpot = h("request_time_per_output_token_seconds", "Decode time per output token.", LATENCY_BUCKETS, "s");
    this.e2e = h("e2e_request_latency_seconds", "End-to-end request latency.", REQUEST_BUCKETS, "s");
    this.queue = h("request_queue_time_seconds", "Time spent waiting to be scheduled.", REQUEST_BUCKETS, "s");
    this.prefill = h(
      "request_prefill_time_seconds",
      "From the first prefill step to the first token.",
      REQUEST_BUCKETS,
      "s",
    );
    this.decode = h("request_decode_time_seconds", "From the first token to the last.", REQUEST_BUCKETS, "s");
    this.inference = h(
      "request_inference_time_seconds",
      "Prefill plus decode time (running, not waiting).",
      REQUEST_BUCKETS,
      "s",
    );
    this.vision = h(
      "minicpmv_request_vision_encode_time_seconds",
      "Vision tower and resampler time.",
      REQUEST_BUCKETS,
      "s",
    );
    this.promptTokensH = h("request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS);
    this.genTokensH = h("request_generation_tokens", "Generated tokens per request.", TOKEN_BUCKETS);
    this.promptTokens = c("prompt_tokens_total", "Prompt tokens of finished requests.");
    this.genTokens = c("generation_tokens_total", "Generated tokens.");
    this.cachedTokens = c("prompt_tokens_cached_total", "Prompt tokens served from the prefix cache.");
    this.success = c("request_success_total", "Finished requests by finish reason.");
    this.errors = c("minicpmv_request_failure_total", "Failed requests by error kind.");
  }

  /** Starts observing one request (arrival = now). */
  observe(): RequestObserver {
    const t0 = performance.now();
    const L = this.labels;
    let last: number | undefined;
    return {
      tokens: (n) => {
        if (n <= 0) return;
        const now = performance.now();
        if (last === undefined) this.ttft.record((now - t0) / 1000, L);
        else this.itl.record((now - last) / 1000, L);
        last = now;
        this.genTokens.add(n, L);
      },
      finished: (usage, timings, reasons) => {
        this.e2e.record((performance.now() - t0) / 1000, L);
        this.queue.record(timings.queueMs / 1000, L);
        this.prefill.record(timings.prefillMs / 1000, L);
        this.decode.record(timings.decodeMs / 1000, L);
        this.inference.record((timings.prefillMs + timings.decodeMs) / 1000, L);
        this.vision.record(timings.visionEncodeMs / 1000, L);
        if (usage.completionTokens > 1) this.tpot.record(timings.decodeMs / 1000 / (usage.completionTokens - 1), L);
        this.promptTokensH.record(usage.promptTokens, L);
        this.genTokensH.record(usage.completionTokens, L);
        this.promptTokens.add(usage.promptTokens, L);
        this.cachedTokens.add(usage.cachedPromptTokens, L);
        for (const r of reasons) this.success.add(1, { finished_reason: r, ...L });
      },
      failed: (kind) => this.errors.add(1, { kind, ...L }),
    };
  }

  /**
   * Reads the engine's counters and gauges at each scrape. Engine counters are cumulative since start and
   * exported as they are. Call once.
   */
  watch(stats: () => Promise<EngineStats>): void {
    if (this.watching) throw new Error("GpuMetrics.watch called twice");
    this.watching = true;
    const m = this.source.meter;
    const counter = (name: string, description: string) => m.createObservableCounter(`${VLLM}${name}`, { description });
    const gauge = (name: string, description: string) => m.createObservableGauge(`${VLLM}${name}`, { description });
    const preemptions = counter("num_preemptions_total", "Requests preempted (KV blocks freed, recomputed later).");
    const prefixQueries = counter("prefix_cache_queries_total", "Tokens looked up in the prefix cache.");
    const prefixHits = counter("prefix_cache_hits_total", "Tokens found in the prefix cache.");
    const mmQueries = counter("mm_cache_queries_total", "Vision-embedding cache lookups.");
    const mmHits = counter("mm_cache_hits_total", "Vision-embedding cache hits.");
    const running = gauge("num_requests_running", "Requests running.");
    const waiting = gauge("num_requests_waiting", "Requests waiting.");
    const kvUsage = gauge("kv_cache_usage_perc", "Fraction of KV blocks in use (1 = full).");
    const all = [preemptions, prefixQueries, prefixHits, mmQueries, mmHits, running, waiting, kvUsage];
    m.addBatchObservableCallback(async (r) => {
      // A dead or closing engine has no stats: that scrape just lacks the engine series.
      const s = await stats().catch(() => undefined);
      if (!s) return;
      const L = this.labels;
      r.observe(preemptions, s.preemptions, L);
      r.observe(prefixQueries, s.prefixCacheQueries, L);
      r.observe(prefixHits, s.prefixCacheHits, L);
      r.observe(mmQueries, s.encoderCacheQueries, L);
      r.observe(mmHits, s.encoderCacheHits, L);
      r.observe(running, s.running, L);
      r.observe(waiting, s.waiting, L);
      r.observe(kvUsage, s.kvUsage, L);
    }, all);
  }

  /** Prometheus text exposition. */
  text(): Promise<string> {
    return this.source.metricsText();
  }
}
