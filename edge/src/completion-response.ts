/**
 * Domain generate events -> the OpenAI/vLLM legacy completions JSON: the non-streaming `text_completion`
 * body and the chunks of an SSE stream. A batch of P prompts with n choices each has P*n choices; prompt k's
 * choice j has index k*n + j.
 */
import type { FinishReason, GenerateEvent, Timings, TokenLogprob, Usage } from "./backends/types";
import { chunkJson, finite, stopReasonJson, streamUsage, type UsageJson, usageJson } from "./chat-response";

/** Legacy logprobs: per token its text, logprob, the top alternatives as {token: logprob}, and its offset. */
export interface CompletionLogprobsJson {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/**
 * The legacy logprobs of consecutive tokens whose text starts at character `offset` of the choice's text.
 * `top_logprobs` holds the `topN` most likely tokens plus the chosen one when it is not among them (so up to
 * topN+1 entries, as OpenAI documents). Returns the offset after the last token too.
 */
export function completionLogprobs(
  lps: readonly TokenLogprob[],
  topN: number,
  offset: number,
): { json: CompletionLogprobsJson; end: number } {
  const json: CompletionLogprobsJson = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const l of lps) {
    const chosen = l.chosen;
    json.tokens.push(chosen.token);
    json.token_logprobs.push(finite(chosen.logprob));
    // NOTE: a Map, then fromEntries: token text such as "__proto__" must stay a plain key.
    const top = new Map<string, number>();
    for (const e of l.top.slice(0, topN)) if (!top.has(e.token)) top.set(e.token, finite(e.logprob));
    if (!top.has(chosen.token)) top.set(chosen.token, finite(chosen.logprob));
    json.top_logprobs.push(Object.fromEntries(top));
    json.text_offset.push(at);
    at += chosen.token.length;
  }
  return { json, end: at };
}

/** The usage of a batch: the sum of its requests' usages. */
export function addUsage(a: Usage | undefined, b: Usage): Usage {
  if (!a) return b;
  const m = a.promptTokensByModality;
  const n = b.promptTokensByModality;
  return {
    promptTokens: a.promptTokens + b.promptTokens,
    promptTokensByModality: {
      text: m.text + n.text,
      image: m.image + n.image,
      video: m.video + n.video,
      total: m.total + n.total,
    },
    cachedPromptTokens: a.cachedPromptTokens + b.cachedPromptTokens,
    completionTokens: a.completionTokens + b.completionTokens,
  };
}

/** How the choices of one request are shaped. */
export interface CompletionShape {
  /** Choices per prompt. */
  n: number;
  /** Alternatives per position; null: no logprobs. */
  logprobs: number | null;
  stop: readonly string[];
  /** Per prompt, the text that starts each of its choices (echo), if any. */
  echo?: readonly string[] | undefined;
}

interface ChoiceAcc {
  text: string;
  logprobs: CompletionLogprobsJson | null;
  offset: number;
  tokens: number;
  finishReason: FinishReason | null;
  stopReason: string | number | null;
}

/** Collects the Generate streams of a batch (prompt k's events added as `add(k, ev)`) into a text_completion. */
export class TextCompletionCollector {
  private readonly choices: ChoiceAcc[];
  usage: Usage | undefined;
  readonly timings: Timings[] = [];

  constructor(
    prompts: number,
    private readonly shape: CompletionShape,
  ) {
    this.choices = Array.from({ length: prompts * shape.n }, (_, i) => {
      const echo = shape.echo?.[Math.floor(i / shape.n)] ?? "";
      return {
        text: echo,
        logprobs:
          shape.logprobs === null ? null : { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] },
        offset: echo.length,
        tokens: 0,
        finishReason: null,
        stopReason: null,
      };
    });
  }

  private choice(prompt: number, index: number): ChoiceAcc {
    const c = index < this.shape.n ? this.choices[prompt * this.shape.n + index] : undefined;
    if (!c) throw new Error(`gpu-service sent choice index ${index} but the request has n=${this.shape.n}`);
    return c;
  }

  /** Adds one event of prompt `prompt`'s stream. */
  add(prompt: number, ev: GenerateEvent): void {
    if (ev.type === "token") {
      const c = this.choice(prompt, ev.index);
      c.text += ev.text;
      c.tokens += ev.tokenIds.length;
      if (c.logprobs && this.shape.logprobs !== null) {
        const { json, end } = completionLogprobs(ev.logprobs, this.shape.logprobs, c.offset);
        c.offset = end;
        c.logprobs.tokens.push(...json.tokens);
        c.logprobs.token_logprobs.push(...json.token_logprobs);
        c.logprobs.top_logprobs.push(...json.top_logprobs);
        c.logprobs.text_offset.push(...json.text_offset);
      }
    } else if (ev.type === "choice_end") {
      const c = this.choice(prompt, ev.index);
      c.finishReason = ev.finishReason;
      c.stopReason = stopReasonJson(ev.stopReason, this.shape.stop);
    } else {
      this.usage = addUsage(this.usage, ev.usage);
      this.timings.push(ev.timings);
    }
  }

  /** The text_completion body. */
  body(id: string, created: number, model: string) {
    const usage = this.usage ?? streamUsage(this.choices);
    return {
      id,
      object: "text_completion" as const,
      created,
      model,
      choices: this.choices.map((c, index) => ({
        index,
        text: c.text,
        logprobs: c.logprobs,
        finish_reason: c.finishReason ?? "stop",
        stop_reason: c.stopReason,
      })),
      usage: usageJson(usage),
    };
  }
}

/** Builds the `text_completion` chunks of one SSE stream; tracks each choice's text offset for logprobs. */
export class TextChunkBuilder {
  private readonly offsets = new Map<number, number>();

  constructor(
    private readonly id: string,
    private readonly created: number,
    private readonly model: string,
    /** With include_usage every chunk carries `usage` (null until the last one). */
    private readonly withUsage: boolean,
    private readonly logprobs: number | null,
  ) {}

  private chunk(choices: unknown[], usage?: UsageJson) {
    return chunkJson(
      { id: this.id, object: "text_completion", created: this.created, model: this.model, choices },
      this.withUsage,
      usage,
    );
  }

  /**
   * New text of choice `index` (with its tokens' logprobs when the request asked for them); `usage` so far
   * with continuous_usage_stats.
   */
  text(index: number, text: string, lps: readonly TokenLogprob[], usage?: UsageJson) {
    const offset = this.offsets.get(index) ?? 0;
    let logprobs: CompletionLogprobsJson | null = null;
    if (this.logprobs === null) this.offsets.set(index, offset + text.length);
    else {
      const r = completionLogprobs(lps, this.logprobs, offset);
      logprobs = r.json;
      this.offsets.set(index, r.end);
    }
    return this.chunk([{ index, text, logprobs, finish_reason: null, stop_reason: null }], usage);
  }

  /** The last chunk of one choice, with its finish reason. */
  finish(index: number, reason: FinishReason, stopReason: string | number | null, usage?: UsageJson) {
    return this.chunk([{ index, text: "", logprobs: null, finish_reason: reason, stop_reason: stopReason }], usage);
  }

  /** The usage-only chunk sent before [DONE] when stream_options.include_usage is set. */
  usage(u: UsageJson) {
    return this.chunk([], u);
  }
}
