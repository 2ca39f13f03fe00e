/**
 * One sampling-mode step of one sequence: pick the next token from its logits, append it, and decide
 * whether the completion ends (terminator, stop id, stop string, max_tokens), honouring min_tokens.
 */

import type { OutputText } from "./output-text";
import { applyPenalties, logprobsOf, sampleToken, scratchCopy } from "./sampler";
import type { Seq } from "./sequence";
import type { EngineEvent, FinishReason, PositionLogprobs, SamplingParams, TokenBytes, TokenLogprob } from "./types";

/** What one step produced for one sequence. */
export interface NextToken {
  event: Extract<EngineEvent, { type: "token" }>;
  finish?: FinishReason;
  stopReason: string;
}

/** One position's logprobs: the chosen token and the `topN` most likely, from the raw logits, with bytes. */
export function positionLogprobs(logits: Float32Array, id: number, topN: number, tok: TokenBytes): PositionLogprobs {
  const withBytes = (t: { tokenId: number; logprob: number }): TokenLogprob => ({
    ...t,
    bytes: tok.tokenBytes(t.tokenId),
  });
  const lp = logprobsOf(logits, id, topN);
  return { chosen: withBytes(lp.chosen), top: lp.top.map(withBytes) };
}

/**
 * Samples, appends and checks the stop conditions.
 * @param stopIds terminators (unless ignore_eos) plus the request's stop ids
 */
export function nextToken(
  s: Seq,
  p: SamplingParams,
  logits: Float32Array,
  stopIds: readonly number[],
  tok: TokenBytes,
): NextToken {
  const x = scratchCopy(logits);
  // NOTE: below min_tokens the stop ids cannot be sampled at all (transformers' MinNewTokens processor).
  applyPenalties(x, p, s.generated(), s.numGenerated < p.minTokens ? stopIds : []);
  const id = sampleToken(x, p, s.rng);
  s.tokens.push(id);
  const event: NextToken["event"] = { type: "token", index: s.index, tokenIds: [id], text: "" };
  if (p.logprobs) event.logprobs = [positionLogprobs(logits, id, p.topLogprobs, tok)];
  const checkStops = s.numGenerated >= p.minTokens;
  const text = s.text as OutputText;
  if (checkStops && stopIds.includes(id)) {
    event.text = text.flush();
    // vLLM: the id when a requested stop id matched, empty (null) on a plain terminator.
    return { event, finish: "stop", stopReason: p.stopTokenIds.includes(id) ? String(id) : "" };
  }
  const pushed = text.push(id, checkStops);
  event.text = pushed.text;
  if (pushed.stop !== undefined) return { event, finish: "stop", stopReason: pushed.stop };
  if (s.numGenerated >= p.maxTokens) {
    event.text += text.flush();
    return { event, finish: "length", stopReason: "" };
  }
  return { event, stopReason: "" };
}
