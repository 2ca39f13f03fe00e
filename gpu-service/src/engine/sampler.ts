/**
 * Token selection over one sequence's logits: penalties, temperature, min-p, top-k, top-p, seeded sampling,
 * and log probabilities.
 *
 *   logits ─> logit_bias ─> min_tokens mask ─> repetition penalty ─> presence/frequency ─> (greedy: argmax)
 *          ─> / temperature ─> min_p ─> top_k ─> top_p ─> sample with the sequence's RNG
 *
 * Semantics:
 *  - repetition penalty is the reference's (transformers / CTRL): over the distinct tokens generated so far
 *    (the reference feeds the LLM embeddings only, so prompt tokens are not penalised, MINICPMV26.md §6.5):
 *    a positive logit is divided by the penalty, a negative one multiplied.
 *  - presence / frequency penalties are OpenAI's: logit -= presence * [count > 0] + frequency * count.
 *  - min_p keeps tokens whose probability is at least min_p times the top one (after temperature).
 *  - top_p keeps the smallest most-likely set whose mass reaches top_p (after top_k), at least one token.
 *  - log probabilities are those of the raw model distribution (vLLM's default), not of the warped one.
 */

import type { SamplingParams } from "./types";

/** Seeded PRNG (xoshiro128**), one per sequence, so the same seed gives the same tokens. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: bigint, stream = 0) {
    // splitmix32 over the seed's two 32-bit halves and the stream index.
    let x = Number(BigInt.asUintN(32, seed)) ^ Math.imul(stream + 1, 0x9e3779b9);
    const hi = Number(BigInt.asUintN(32, seed >> 32n));
    const next = () => {
      x = (x + 0x9e3779b9) | 0;
      let z = x ^ hi;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next 32 random bits. */
  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    const a = this.nextU32() >>> 5;
    const b = this.nextU32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Counts of generated tokens, for the penalties. */
export function tokenCounts(generated: readonly number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const t of generated) m.set(t, (m.get(t) ?? 0) + 1);
  return m;
}

/**
 * Applies the logit bias, the min_tokens mask and the penalties in place.
 * @param banned ids forced to -Infinity (stop ids while min_tokens is not reached)
 */
export function applyPenalties(
  logits: Float32Array,
  p: Pick<SamplingParams, "repetitionPenalty" | "presencePenalty" | "frequencyPenalty" | "logitBias">,
  generated: readonly number[],
  banned: readonly number[] = [],
): void {
  for (const [id, bias] of p.logitBias) if (id < logits.length) logits[id] = (logits[id] as number) + bias;
  for (const id of banned) if (id < logits.length) logits[id] = Number.NEGATIVE_INFINITY;
  if (generated.length === 0) return;
  const counts = tokenCounts(generated);
  const rp = p.repetitionPenalty;
  for (const [id, c] of counts) {
    let l = logits[id];
    if (l === undefined) continue;
    if (rp !== 1) l = l > 0 ? l / rp : l * rp;
    l -= p.presencePenalty + p.frequencyPenalty * c;
    logits[id] = l;
  }
}

/** Index of the largest value (lowest index on ties). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  let bv = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < x.length; i++) {
    const v = x[i] as number;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

/** Indices of the `k` largest values, largest first (lower index first on ties). */
export function topKIndices(x: ArrayLike<number>, k: number, among?: readonly number[]): number[] {
  const n = among ? among.length : x.length;
  k = Math.min(k, n);
  if (k <= 0) return [];
  // Min-heap of the best k seen, ordered by (value asc, index desc) so the root is the worst kept.
  const heap: number[] = [];
  const worse = (a: number, b: number) => {
    const va = x[a] as number;
    const vb = x[b] as number;
    return va < vb || (va === vb && a > b);
  };
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && worse(heap[l] as number, heap[m] as number)) m = l;
      if (r < heap.length && worse(heap[r] as number, heap[m] as number)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m] as number, heap[i] as number];
      i = m;
    }
  };
  for (let j = 0; j < n; j++) {
    const i = among ? (among[j] as number) : j;
    if (heap.length < k) {
      heap.push(i);
      for (let c = heap.length - 1; c > 0; ) {
        const p = (c - 1) >> 1;
        if (!worse(heap[c] as number, heap[p] as number)) break;
        [heap[c], heap[p]] = [heap[p] as number, heap[c] as number];
        c = p;
      }
    } else if (worse(heap[0] as number, i)) {
      heap[0] = i;
      down(0);
    }
  }
  return heap.sort((a, b) => (worse(a, b) ? 1 : worse(b, a) ? -1 : 0));
}

/** log(sum(exp(x))) computed stably in float64. */
export function logSumExp(x: ArrayLike<number>): number {
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < x.length; i++) if ((x[i] as number) > m) m = x[i] as number;
  if (m === Number.NEGATIVE_INFINITY) return m;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp((x[i] as number) - m);
  return m + Math.log(s);
}

/** Tokens that survive min_p, top_k and top_p, most likely first, with their (unnormalised) weights. */
export function candidates(
  logits: Float32Array,
  p: Pick<SamplingParams, "temperature" | "topK" | "topP" | "minP">,
): { ids: number[]; weights: number[] } {
  const inv = 1 / p.temperature;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if ((logits[i] as number) > max) max = logits[i] as number;
  // In temperature-scaled units z = l / T, prob(i) / prob(top) = exp(z_i - z_max).
  // Tokens below e^-40 of the top one carry < 1e-12 of the mass over this vocabulary: never in a top_p set
  // with top_p < 1, so they are dropped before sorting (they are kept when nothing filters).
  let floor = p.minP > 0 ? Math.log(p.minP) : Number.NEGATIVE_INFINITY;
  const filtering = (p.topK > 0 && p.topK < logits.length) || p.topP < 1;
  if (filtering) floor = Math.max(floor, -40);
  let ids: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    const l = logits[i] as number;
    if (l === Number.NEGATIVE_INFINITY) continue;
    if ((l - max) * inv >= floor) ids.push(i);
  }
  if (ids.length === 0) ids.push(argmax(logits));
  if (p.topK > 0 && p.topK < ids.length) ids = topKIndices(logits, p.topK, ids);
  else if (filtering) ids.sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b);
  let weights = ids.map((i) => Math.exp(((logits[i] as number) - max) * inv));
  if (p.topP < 1) {
    const total = weights.reduce((s, w) => s + w, 0);
    let cum = 0;
    let keep = 0;
    while (keep < ids.length && cum < p.topP * total) cum += weights[keep++] as number;
    keep = Math.max(1, keep);
    ids = ids.slice(0, keep);
    weights = weights.slice(0, keep);
  }
  return { ids, weights };
}

/** Draws one token from processed logits: argmax when temperature is 0, else from the filtered distribution. */
export function sampleToken(
  logits: Float32Array,
  p: Pick<SamplingParams, "temperature" | "topK" | "topP" | "minP">,
  rng: Rng,
): number {
  if (p.temperature <= 1e-5) return argmax(logits);
  const { ids, weights } = candidates(logits, p);
  const total = weights.reduce((s, w) => s + w, 0);
  const u = rng.next() * total;
  let cum = 0;
  for (let i = 0; i < ids.length; i++) {
    cum += weights[i] as number;
    if (u < cum) return ids[i] as number;
  }
  return ids[ids.length - 1] as number;
}

/** Log probability of `token` and the `topN` most likely tokens under the raw logits. */
export function logprobsOf(
  logits: Float32Array,
  token: number,
  topN: number,
): { chosen: { tokenId: number; logprob: number }; top: { tokenId: number; logprob: number }[] } {
  const lse = logSumExp(logits);
  const lp = (id: number) => (logits[id] as number) - lse;
  return {
    chosen: { tokenId: token, logprob: lp(token) },
    top: topKIndices(logits, topN).map((id) => ({ tokenId: id, logprob: lp(id) })),
  };
}

/** Greedy decoding with no penalties (tests and benchmarks): temperature 0, everything else neutral. */
export function greedyParams(maxTokens: number, overrides: Partial<SamplingParams> = {}): SamplingParams {
  return {
    temperature: 0,
    topP: 1,
    topK: 0,
    minP: 0,
    repetitionPenalty: 1,
    presencePenalty: 0,
    frequencyPenalty: 0,
    seed: undefined,
    maxTokens,
    minTokens: 0,
    stop: [],
    stopTokenIds: [],
    ignoreEos: false,
    n: 1,
    beamWidth: 1,
    lengthPenalty: 1,
    skipSpecialTokens: false,
    logprobs: false,
    topLogprobs: 0,
    logitBias: new Map(),
    ...overrides,
  };
}
