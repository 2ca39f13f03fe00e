import { afterAll, describe, expect, it } from "vitest";
import type { EngineStats } from "./engine/types";
import { GpuMetrics, serveMetrics } from "./metrics";

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
  const m = new GpuMetrics("tiny-a");
  let close: (() => void) | undefined;
  afterAll(() => close?.());

  it("exposes vLLM-style names with the minicpmv prefix over HTTP", async () => {
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
    const s = await serveMetrics(m, "127.0.0.1", 0, async () => {
      n++;
      m.update(
        stats({
          running: 2,
          waiting: 1,
          kvUsage: 0.25,
          preemptions: n * 3,
          prefixCacheHits: 16,
          prefixCacheQueries: 64,
        }),
      );
    });
    close = () => s.server.close();
    await fetch(`http://127.0.0.1:${s.port}/metrics`);
    const text = await (await fetch(`http://127.0.0.1:${s.port}/metrics`)).text();
    const line = (name: string) =>
      text
        .split("\n")
        .find((l) => l.startsWith(name))
        ?.split(" ")[1];
    const L = '{model_name="tiny-a",engine="0"}';
    expect(line(`minicpmv:generation_tokens_total${L}`)).toBe("3");
    expect(line(`minicpmv:prompt_tokens_total${L}`)).toBe("40");
    expect(line(`minicpmv:prompt_tokens_cached_total${L}`)).toBe("32");
    expect(line('minicpmv:request_success_total{finished_reason="stop",model_name="tiny-a",engine="0"}')).toBe("1");
    expect(line('minicpmv:request_failure_total{kind="resource_exhausted",model_name="tiny-a",engine="0"}')).toBe("1");
    expect(line(`minicpmv:time_to_first_token_seconds_count${L}`)).toBe("1");
    expect(line(`minicpmv:inter_token_latency_seconds_count${L}`)).toBe("1");
    expect(line(`minicpmv:num_requests_running${L}`)).toBe("2");
    expect(line(`minicpmv:num_requests_waiting${L}`)).toBe("1");
    expect(line(`minicpmv:kv_cache_usage_perc${L}`)).toBe("0.25");
    // Engine counters are cumulative: two scrapes (3 then 6) give 6, not 9.
    expect(line(`minicpmv:num_preemptions_total${L}`)).toBe("6");
    expect(line(`minicpmv:prefix_cache_hits_total${L}`)).toBe("16");
    expect((await fetch(`http://127.0.0.1:${s.port}/nope`)).status).toBe(404);
  });
});
