/**
 * Beam search as transformers runs it for the reference's `chat(sampling=False)` (3 beams, repetition
 * penalty 1.2, length_penalty 1, early_stopping False; MINICPMV26.md §6.5):
 *
 *   scores = log_softmax(logits) ─> repetition penalty (on log-probs) ─> + beam score
 *   top max(2, 1 + #eos) * width candidates over all (beam, token), best first
 *   eos candidate ranked < width  -> finished hypothesis, score = sum logprobs / generated_len
 *   other candidates               -> next beams, until `width` are chosen
 *   done when `width` hypotheses exist and the worst is >= best candidate / generated_len
 *
 * generated_len counts the new token (transformers 4.40 `cur_len = input_ids.shape[-1] + 1`; the reference
 * feeds embeddings only, so input_ids start empty). The engine's sequences are the beams: a chosen
 * candidate continues its parent's sequence (forked copy-on-write when a parent has several children).
 */

import { applyPenalties, logSumExp } from "./sampler";

/** A finished hypothesis. */
export interface Hypothesis<P = unknown> {
  /** What the caller attached to the beam (e.g. its per-token logprobs), extended for the terminator. */
  payload?: P;
  /** Generated tokens, without the terminator. */
  tokens: number[];
  /** Length-normalised score. */
  score: number;
  /** The terminator that ended it; undefined when it ended at the length limit. */
  eosToken?: number;
}

/** A live beam as the search sees it. */
export interface LiveBeam<P = unknown> {
  /** Caller's data carried into the hypothesis this beam may become. */
  payload?: P;
  /** Generated tokens so far. */
  tokens: readonly number[];
  /** Sum of processed log-probs so far. */
  score: number;
}

/** The next beams: which live beam each continues and with which token. */
export interface BeamChoice {
  parent: number;
  token: number;
  score: number;
}

/** Beam-search bookkeeping for one request. */
export class BeamSearch<P = unknown> {
  /** Finished hypotheses, best first, at most `width`. */
  readonly hyps: Hypothesis<P>[] = [];
  /** Whether no live beam can beat the finished hypotheses any more. */
  done = false;
  private worst = 1e9;

  constructor(
    readonly width: number,
    readonly repetitionPenalty: number,
    readonly eos: readonly number[],
    readonly minTokens = 0,
    readonly lengthPenalty = 1,
    readonly logitBias: ReadonlyMap<number, number> = new Map(),
  ) {}

  /**
   * One step over the live beams, each with its logits. Returns the next beams (at most `width`; fewer or
   * none only when the search is done).
   */
  step(
    beams: readonly LiveBeam<P>[],
    logits: readonly Float32Array[],
    /** The payload of a hypothesis that beam `parent` ends with terminator `token`. */
    endPayload?: (parent: number, token: number) => P,
  ): BeamChoice[] {
    const genLen = (beams[0]?.tokens.length ?? 0) + 1;
    const keep = Math.max(2, 1 + this.eos.length) * this.width;
    // Candidate scores per beam, then a global top-`keep` (best first, lower flat index on ties).
    const cand: { parent: number; token: number; score: number }[] = [];
    for (let b = 0; b < beams.length; b++) {
      const beam = beams[b] as LiveBeam;
      const l = logits[b] as Float32Array;
      const lse = logSumExp(l);
      const scores = new Float32Array(l.length);
      for (let i = 0; i < l.length; i++) scores[i] = (l[i] as number) - lse;
      const banned = beam.tokens.length < this.minTokens ? this.eos : [];
      applyPenalties(
        scores,
        {
          repetitionPenalty: this.repetitionPenalty,
          presencePenalty: 0,
          frequencyPenalty: 0,
          logitBias: this.logitBias,
        },
        beam.tokens,
        banned,
      );
      // Only the best `keep` of each beam can make the global top `keep`.
      const order = topIdx(scores, keep);
      for (const t of order) cand.push({ parent: b, token: t, score: (scores[t] as number) + beam.score });
    }
    cand.sort((a, b) => b.score - a.score || a.parent - b.parent || a.token - b.token);
    const top = cand.slice(0, keep);
    const next: BeamChoice[] = [];
    for (let rank = 0; rank < top.length && next.length < this.width; rank++) {
      const c = top[rank] as BeamChoice;
      if (this.eos.includes(c.token)) {
        if (rank >= this.width) continue;
        this.add(
          [...(beams[c.parent] as LiveBeam<P>).tokens],
          c.score,
          genLen,
          c.token,
          endPayload?.(c.parent, c.token),
        );
      } else next.push(c);
    }
    const best = top[0]?.score ?? Number.NEGATIVE_INFINITY;
    if (this.hyps.length >= this.width) {
      const attainable = best / genLen ** this.lengthPenalty;
      if (this.worst >= attainable) this.done = true;
    }
    return this.done ? [] : next;
  }

  /** Ends the search (length limit): live beams become hypotheses; returns the best `n`. */
  finalize(beams: readonly LiveBeam<P>[], n: number): Hypothesis<P>[] {
    if (!this.done) for (const b of beams) this.add([...b.tokens], b.score, b.tokens.length, undefined, b.payload);
    this.done = true;
    return this.hyps.slice(0, n);
  }

  private add(tokens: number[], sumLogprobs: number, genLen: number, eosToken?: number, payload?: P): void {
    const score = sumLogprobs / genLen ** this.lengthPenalty;
    if (this.hyps.length < this.width || score > this.worst) {
      let i = this.hyps.length;
      while (i > 0 && (this.hyps[i - 1] as Hypothesis<P>).score < score) i--;
      const h: Hypothesis<P> = { tokens, score };
      if (eosToken !== undefined) h.eosToken = eosToken;
      if (payload !== undefined) h.payload = payload;
      this.hyps.splice(i, 0, h);
      if (this.hyps.length > this.width) this.hyps.pop();
      // The list is sorted best first, so the worst is last.
      this.worst = (this.hyps[this.hyps.length - 1] as Hypothesis<P>).score;
    }
  }
}

function topIdx(x: Float32Array, k: number): number[] {
  const idx: number[] = [];
  // Fast path: partial selection by threshold on a copy of the k best.
  const best: number[] = [];
  for (let i = 0; i < x.length; i++) {
    const v = x[i] as number;
    if (v === Number.NEGATIVE_INFINITY) continue;
    if (best.length < k) {
      best.push(i);
      if (best.length === k) best.sort((a, b) => (x[b] as number) - (x[a] as number) || a - b);
    } else if (v > (x[best[k - 1] as number] as number)) {
      let j = k - 1;
      while (j > 0 && (x[best[j - 1] as number] as number) < v) j--;
      best.splice(j, 0, i);
      best.pop();
    }
  }
  if (best.length < k) best.sort((a, b) => (x[b] as number) - (x[a] as number) || a - b);
  idx.push(...best);
  return idx;
}
