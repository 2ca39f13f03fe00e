import { describe, expect, it } from "vitest";
import type { EngineStats } from "./engine/types";
import { GpuMetrics } from "./metrics";

const stats = (over: Partial<EngineStats>): EngineStats => ({
  running: 0,
  waiting: 0,
  kvTotalBlocks: 100,
  kvUsedBlocks: 0,
  kvCachedBlocks: 0,
  kvUsage: 0,
  prefixCacheQueries: 0,
  prefixCacheHits: 0,
  encoderCacheQueries: 0,
  encoderCacheHits: 0,
  encoderCacheBytes: 0,
  preemptions: 0,
  steps: 0,
  promptTokensComputed: 0,
  generationTokens: 0,
  ...over,
});

describe("GpuMetrics", () => {
  it("exposes vLLM's names (vllm:), extras with the minicpmv_ prefix, engine series read at each scrape", async () => {
    const m = new GpuMetrics("tiny-a");
    const obs = m.observe();
    obs.tokens(1);
    obs.tokens(2);
    obs.finished(
      {
        promptTokens: 40,
        promptCounts: { text: 40, image: 0, video: 0, total: 40 },
        cachedPromptTokens: 32,
        completionTokens: 3,
      },
      { queueMs: 5, visionEncodeMs: 0, prefillMs: 10, decodeMs: 20 },
      ["stop"],
    );
    m.observe().failed("resource_exhausted");
    let n = 0;
    m.watch(async () => {
      n++;
      return stats({
        running: 2,
        waiting: 1,
        kvUsage: 0.25,
        preemptions: n * 3,
        prefixCacheHits: 16,
        prefixCacheQueries: 64,
      });
    });
    await m.text();
    const text = await m.text();
    expect(n).toBe(2);
    const line = (name: string) =>
      text
        .split("\n")
        .find((l) => l.startsWith(name))
        ?.split(" ")[1];
    const L = '{model_name="tiny-a",engine="0"}';
    expect(line(`vllm:generation_tokens_total${L}`)).toBe("3");
    expect(line(`vllm:prompt_tokens_total${L}`)).toBe("40");
    expect(line(`vllm:prompt_tokens_cached_total${L}`)).toBe("32");
    expect(line('vllm:request_success_total{finished_reason="stop",model_name="tiny-a",engine="0"}')).toBe("1");
    expect(line('minicpmv_request_failure_total{kind="resource_exhausted",model_name="tiny-a",engine="0"}')).toBe("1");
    expect(line(`vllm:time_to_first_token_seconds_count${L}`)).toBe("1");
    expect(line(`vllm:inter_token_latency_seconds_count${L}`)).toBe("1");
    expect(line(`vllm:request_queue_time_seconds_sum${L}`)).toBe("0.005");
    expect(line(`vllm:request_time_per_output_token_seconds_sum${L}`)).toBe("0.01");
    expect(line(`vllm:num_requests_running${L}`)).toBe("2");
    expect(line(`vllm:num_requests_waiting${L}`)).toBe("1");
    expect(line(`vllm:kv_cache_usage_perc${L}`)).toBe("0.25");
    // Engine counters are cumulative: two scrapes (3 then 6) give 6, not 9.
    expect(line(`vllm:num_preemptions_total${L}`)).toBe("6");
    expect(line(`vllm:prefix_cache_hits_total${L}`)).toBe("16");
    expect(text).toContain("# TYPE vllm:num_preemptions_total counter");
    expect(text).toContain("# TYPE vllm:kv_cache_usage_perc gauge");
  });

  it("leaves the engine series out of a scrape when the engine has no stats", async () => {
    const m = new GpuMetrics("tiny-a");
    m.watch(() => Promise.reject(new Error("the engine is not running")));
    const text = await m.text();
    expect(text).not.toContain("vllm:num_requests_running{");
    expect(() => m.watch(() => Promise.reject(new Error("x")))).toThrow(/twice/);
  });
});
