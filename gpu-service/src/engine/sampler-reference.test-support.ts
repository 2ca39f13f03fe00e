/**
 * TEST ONLY: the sampler as it was before the O(n) rewrite (sorts every candidate in JS each step), kept
 * verbatim as the reference that `sampler-equivalence.test.ts` and `bench/sampler.ts` compare the fast
 * sampler against: same tokens for the same seed, same logprobs, bit for bit.
 */

import type { Rng } from "./sampler";
import type { SamplingParams } from "./types";

/** Index of the largest value (lowest index on ties). */
export function refArgmax(x: ArrayLike<number>): number {
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
export function refTopKIndices(x: ArrayLike<number>, k: number, among?: readonly number[]): number[] {
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
export function refLogSumExp(x: ArrayLike<number>): number {
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < x.length; i++) if ((x[i] as number) > m) m = x[i] as number;
  if (m === Number.NEGATIVE_INFINITY) return m;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp((x[i] as number) - m);
  return m + Math.log(s);
}

/** Tokens that survive min_p, top_k and top_p, most likely first, with their (unnormalised) weights. */
export function refCandidates(
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
  if (ids.length === 0) ids.push(refArgmax(logits));
  if (p.topK > 0 && p.topK < ids.length) ids = refTopKIndices(logits, p.topK, ids);
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
export function refSampleToken(
  logits: Float32Array,
  p: Pick<SamplingParams, "temperature" | "topK" | "topP" | "minP">,
  rng: Rng,
): number {
  if (p.temperature <= 1e-5) return refArgmax(logits);
  const { ids, weights } = refCandidates(logits, p);
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
export function refLogprobsOf(
  logits: Float32Array,
  token: number,
  topN: number,
): { chosen: { tokenId: number; logprob: number }; top: { tokenId: number; logprob: number }[] } {
  const lse = refLogSumExp(logits);
  const lp = (id: number) => (logits[id] as number) - lse;
  return {
    chosen: { tokenId: token, logprob: lp(token) },
    top: refTopKIndices(logits, topN).map((id) => ({ tokenId: id, logprob: lp(id) })),
  };
}
