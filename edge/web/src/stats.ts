import type { StreamResult } from "./chat-client";

/** One figure shown under an answer; `key` is stable (tests and styles use it), `text` is what people read. */
export interface Stat {
  key: string;
  text: string;
}

/**
 * The per-answer figures: prompt tokens by modality (what an image or a video costs),
 * cached prompt tokens, answer tokens, time to first token and decode speed.
 */
export function answerStats(result: StreamResult): Stat[] {
  const stats: Stat[] = [];
  const usage = result.usage;
  if (usage !== null) {
    stats.push({ key: "prompt_tokens", text: `Prompt ${usage.prompt_tokens} tokens` });
    const details = usage.prompt_tokens_details ?? {};
    for (const [key, label] of [
      ["text_tokens", "text"],
      ["image_tokens", "image"],
      ["video_tokens", "video"],
      ["cached_tokens", "cached"],
    ] as const) {
      const value = details[key];
      if (typeof value === "number") stats.push({ key, text: `${label} ${value}` });
    }
  }
  const answerTokens = usage?.completion_tokens ?? null;
  stats.push(
    answerTokens !== null
      ? { key: "completion_tokens", text: `Answer ${answerTokens} tokens` }
      : { key: "completion_tokens", text: `Answer ≈${result.chunks} tokens` },
  );
  if (result.firstTokenMs !== null) {
    stats.push({ key: "ttft", text: `First token ${formatMs(result.firstTokenMs)}` });
    // Decode speed: tokens after the first over the time after the first (prefill excluded).
    const tokens = (answerTokens ?? result.chunks) - 1;
    const seconds = (result.totalMs - result.firstTokenMs) / 1000;
    if (tokens > 0 && seconds > 0)
      stats.push({ key: "tokens_per_second", text: `${(tokens / seconds).toFixed(1)} tokens/s` });
  }
  return stats;
}

/** "850 ms" below a second, "1.25 s" above. */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
