/**
 * A validated legacy completions request (POST /v1/completions) -> the domain inputs of Prepare and Generate.
 * Checks that need more than one field live here; each failure is a 400 naming the field.
 */
import type { GenerationParams, PrepareInput } from "./backends/types";
import { bad, samplingParams } from "./chat-request";
import { EdgeError } from "./errors";
import type { CompletionRequest, PromptBatch } from "./schemas";
import { checkStructuredInterplay, type StructuredPlan, structuredPlan } from "./structured-request";

/** OpenAI's and vLLM's default `max_tokens` for completions (chat has none: the context is the limit). */
export const DEFAULT_COMPLETION_MAX_TOKENS = 16;

/** Everything the completions route needs from one request. */
export interface CompletionPlan {
  prompts: PromptBatch;
  /** Shared by every prompt; `maxTokens` is set only when the client sent `max_tokens`. */
  params: GenerationParams;
  /** `max_tokens`, or the default 16 (which shrinks to fit the context instead of failing). */
  maxTokens: number;
  maxTokensExplicit: boolean;
  /** Prepend each prompt's text to its choices. */
  echo: boolean;
  /** Alternatives per position in `logprobs.top_logprobs`; null: no logprobs. */
  logprobs: number | null;
  stream: boolean;
  includeUsage: boolean;
  /** With include_usage, every chunk carries the usage so far (vLLM's continuous_usage_stats). */
  continuousUsage: boolean;
  priority: number;
  /** Constrained decoding, and the field it came from. */
  structured: StructuredPlan | undefined;
}

/** Builds the plan of a validated request; throws a 400 EdgeError naming the field. */
export function planCompletion(req: CompletionRequest): CompletionPlan {
  if (req.suffix) throw bad("suffix", "suffix is not supported");
  if (req.stream_options && !req.stream) throw bad("stream_options", "stream_options is only allowed with stream=true");
  if (req.echo && req.logprobs != null) {
    throw bad(
      "echo",
      "echo with logprobs needs the prompt's logprobs, which this server does not compute; drop echo or logprobs",
    );
  }
  const n = req.n ?? 1;
  if (req.best_of != null && req.best_of !== n) {
    throw bad("best_of", `only best_of equal to n (${n}) is supported, got ${req.best_of}`);
  }
  const explicit = req.max_tokens ?? undefined;
  const maxTokens = explicit ?? DEFAULT_COMPLETION_MAX_TOKENS;
  const structured = structuredPlan(req);
  if (structured) checkStructuredInterplay(structured, req);
  const params = samplingParams(req, maxTokens);
  if (explicit === undefined) delete params.maxTokens;
  if (structured) params.structured = structured.spec;
  if (req.logprobs != null) {
    params.logprobs = true;
    params.topLogprobs = req.logprobs;
  }
  return {
    prompts: req.prompt,
    params,
    maxTokens,
    maxTokensExplicit: explicit !== undefined,
    echo: req.echo ?? false,
    logprobs: req.logprobs ?? null,
    stream: req.stream ?? false,
    includeUsage: req.stream_options?.include_usage ?? false,
    continuousUsage: req.stream_options?.continuous_usage_stats ?? false,
    priority: req.priority ?? 0,
    structured,
  };
}

/** The Prepare input of prompt `k`: raw text or token ids, no messages, no chat template. */
export function completionPrepareInput(plan: CompletionPlan, k: number): Omit<PrepareInput, "requestId"> {
  const p = plan.prompts;
  const base = { messages: [], options: {}, addGenerationPrompt: false };
  return p.form === "text"
    ? { ...base, rawPrompt: p.prompts[k] as string }
    : { ...base, promptTokenIds: p.prompts[k] as number[] };
}

/**
 * A backend error about a raw prompt in the client's terms: `prompt_token_ids[i]` becomes `field[i]`,
 * `raw_prompt` becomes `field`, and context errors name `field` rather than `messages`.
 */
export function rawPromptError(err: unknown, field: string): unknown {
  if (!(err instanceof EdgeError)) return err;
  const m = /^(?:prompt_token_ids\[(\d+)\]|raw_prompt)/.exec(err.message);
  if (m) {
    const param = m[1] === undefined ? field : `${field}[${m[1]}]`;
    return new EdgeError(err.kind, `${param}${err.message.slice(m[0].length)}`, { ...err.extra, param });
  }
  if (err.extra.param === "messages" || err.extra.param === "prompt") {
    return new EdgeError(err.kind, err.message, { ...err.extra, param: field });
  }
  return err;
}

/** A backend error about prompt `k` of a completions request: `prompt`, or `prompt[k]` in a batch. */
export function promptError(err: unknown, plan: CompletionPlan, k: number): unknown {
  return rawPromptError(err, plan.prompts.batched ? `prompt[${k}]` : "prompt");
}
