/**
 * Domain generate events -> the OpenAI/vLLM response JSON: the non-streaming `chat.completion` body and
 * the `chat.completion.chunk` objects of an SSE stream.
 */
import type {
  FinishReason,
  GenerateEvent,
  PreparedPrompt,
  Timings,
  TokenLogprob,
  TokenLogprobEntry,
  Usage,
} from "./backends/types";

/** Token usage in the OpenAI shape, with vLLM's cached_tokens and per-modality prompt counts. */
export interface UsageJson {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number; text_tokens: number; image_tokens: number; video_tokens: number };
}

/** One position's log probabilities in the OpenAI shape. */
export interface LogprobJson {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/** A logprob JSON can carry. NOTE: JSON has no -Infinity; vLLM clamps impossible tokens to -9999.0 too. */
export function finite(x: number): number {
  return Number.isFinite(x) ? x : -9999;
}

function entryJson(e: TokenLogprobEntry) {
  return { token: e.token, logprob: finite(e.logprob), bytes: Array.from(e.bytes) };
}

/** One position's logprobs; `topN` alternatives at most. */
export function logprobJson(l: TokenLogprob, topN: number): LogprobJson {
  return { ...entryJson(l.chosen), top_logprobs: l.top.slice(0, topN).map(entryJson) };
}

/** The usage object of a finished request. */
export function usageJson(u: Usage): UsageJson {
  const m = u.promptTokensByModality;
  return {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    prompt_tokens_details: {
      cached_tokens: u.cachedPromptTokens,
      text_tokens: m.text,
      image_tokens: m.image,
      video_tokens: m.video,
    },
  };
}

/**
 * vLLM's continuous_usage_stats: the usage so far of prompts `prompts` (summed) with `completionTokens`
 * generated until now (cached tokens are known only at the end).
 */
export function runningUsageJson(prompts: readonly PreparedPrompt[], completionTokens: number): UsageJson {
  const by = { text: 0, image: 0, video: 0, total: 0 };
  let promptTokens = 0;
  for (const p of prompts) {
    by.text += p.tokenCounts.text;
    by.image += p.tokenCounts.image;
    by.video += p.tokenCounts.video;
    by.total += p.tokenCounts.total;
    promptTokens += p.tokenCounts.total || p.tokenIds.length;
  }
  return usageJson({ promptTokens, promptTokensByModality: by, cachedPromptTokens: 0, completionTokens });
}

/**
 * vLLM's stop_reason: the matched stop string, or the stop token id as a number; null when the completion
 * ended on EOS or length. The backend reports both as text, so a value that is one of the request's stop
 * strings stays a string.
 */
export function stopReasonJson(raw: string, stopStrings: readonly string[]): string | number | null {
  if (raw === "") return null;
  if (stopStrings.includes(raw)) return raw;
  return /^\d+$/.test(raw) ? Number(raw) : raw;
}

/** The usage when a stream ended without its final event: only the completion tokens are known. */
export function streamUsage(choices: readonly { tokens: number }[]): Usage {
  return {
    promptTokens: 0,
    promptTokensByModality: { text: 0, image: 0, video: 0, total: 0 },
    cachedPromptTokens: 0,
    completionTokens: choices.reduce((s, c) => s + c.tokens, 0),
  };
}

/** One choice being assembled. */
interface ChoiceAcc {
  text: string;
  logprobs: LogprobJson[];
  tokens: number;
  finishReason: FinishReason | null;
  stopReason: string | number | null;
}

/** Collects a whole Generate stream into a non-streaming chat.completion body. */
export class CompletionCollector {
  private readonly choices: ChoiceAcc[];
  usage: Usage | undefined;
  timings: Timings | undefined;

  constructor(
    n: number,
    private readonly opts: { logprobs: boolean; topLogprobs: number; stop: readonly string[] },
  ) {
    this.choices = Array.from({ length: n }, () => ({
      text: "",
      logprobs: [],
      tokens: 0,
      finishReason: null,
      stopReason: null,
    }));
  }

  private choice(index: number): ChoiceAcc {
    const c = this.choices[index];
    if (!c) throw new Error(`gpu-service sent choice index ${index} but the request has n=${this.choices.length}`);
    return c;
  }

  /** Adds one event. */
  add(ev: GenerateEvent): void {
    if (ev.type === "token") {
      const c = this.choice(ev.index);
      c.text += ev.text;
      c.tokens += ev.tokenIds.length;
      if (this.opts.logprobs) for (const l of ev.logprobs) c.logprobs.push(logprobJson(l, this.opts.topLogprobs));
    } else if (ev.type === "choice_end") {
      const c = this.choice(ev.index);
      c.finishReason = ev.finishReason;
      c.stopReason = stopReasonJson(ev.stopReason, this.opts.stop);
    } else {
      this.usage = ev.usage;
      this.timings = ev.timings;
    }
  }

  /** The chat.completion body. */
  body(id: string, created: number, model: string) {
    const usage = this.usage ?? streamUsage(this.choices);
    return {
      id,
      object: "chat.completion" as const,
      created,
      model,
      choices: this.choices.map((c, index) => ({
        index,
        message: { role: "assistant" as const, content: c.text as string | null },
        logprobs: this.opts.logprobs ? { content: c.logprobs } : null,
        finish_reason: (c.finishReason ?? "stop") as FinishReason | "tool_calls",
        stop_reason: c.stopReason,
      })),
      usage: usageJson(usage),
      system_fingerprint: null,
    };
  }
}

/**
 * One SSE chunk: `head` plus `usage` when given, or `usage: null` when the stream was asked to include usage
 * (every chunk then carries it, null until the last one).
 */
export function chunkJson(
  head: { id: string; object: string; created: number; model: string; choices: unknown[] },
  withUsage: boolean,
  usage?: UsageJson | null,
): Record<string, unknown> {
  const c: Record<string, unknown> = { ...head };
  if (usage !== undefined) c.usage = usage;
  else if (withUsage) c.usage = null;
  return c;
}

/** Builds the chunk objects of one SSE stream. */
export class ChunkBuilder {
  constructor(
    private readonly id: string,
    private readonly created: number,
    private readonly model: string,
    /** With include_usage every chunk carries `usage` (null until the last one). */
    private readonly withUsage: boolean,
  ) {}

  private chunk(choices: unknown[], usage?: UsageJson | null) {
    return chunkJson(
      { id: this.id, object: "chat.completion.chunk", created: this.created, model: this.model, choices },
      this.withUsage,
      usage,
    );
  }

  /** The opening chunk of one choice: the assistant role with empty content. */
  role(index: number, usage?: UsageJson) {
    return this.chunk(
      [{ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
      usage,
    );
  }

  /** A content delta. */
  delta(index: number, text: string, logprobs: LogprobJson[] | null, usage?: UsageJson) {
    return this.chunk(
      [{ index, delta: { content: text }, logprobs: logprobs ? { content: logprobs } : null, finish_reason: null }],
      usage,
    );
  }

  /** A tool-call fragment (`delta.tool_calls`): the call's id, type and name, or a piece of its arguments. */
  toolCall(index: number, fragment: Record<string, unknown>, usage?: UsageJson) {
    return this.chunk([{ index, delta: { tool_calls: [fragment] }, logprobs: null, finish_reason: null }], usage);
  }

  /** The last chunk of one choice, with its finish reason. */
  finish(index: number, reason: FinishReason | "tool_calls", stopReason: string | number | null, usage?: UsageJson) {
    return this.chunk(
      [{ index, delta: { content: "" }, logprobs: null, finish_reason: reason, stop_reason: stopReason }],
      usage,
    );
  }

  /** The usage-only chunk sent before [DONE] when stream_options.include_usage is set. */
  usage(u: UsageJson) {
    return this.chunk([], u);
  }
}
