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
 *
 * Cost: O(vocabulary) per token, no vocabulary-sized allocation after the first steps. top_k by a heap, top_p
 * by an exactly sorted head plus a bound on the rest (a radix sort of everything only when the distribution is
 * flat), exp by `fastExp` (Math.exp's bits). NOTE: the draws, weights and logprobs are bit for bit those of
 * the original full-sort sampler (`sampler-reference.test-support.ts`, checked by sampler-equivalence.test.ts):
 * same seed, same tokens.
 */

import { fastExp } from "./fast-exp";
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

// NOTE: the engine samples synchronously on one thread, so the working buffers below are module-level and
// reused: after the first steps no call allocates anything vocabulary-sized.
let sortKeys = new Float64Array(0);
let keptIds = new Int32Array(0); // the tokens that may be drawn, in the reference's order
let keptW = new Float64Array(0); // and their weights exp((l - max) / T)

function grow<T extends Int32Array | Float64Array>(a: T, n: number, make: (n: number) => T): T {
  return a.length >= n ? a : make(Math.max(n, 2 * a.length));
}

function ensureVocab(n: number): void {
  keptIds = grow(keptIds, n, (k) => new Int32Array(k));
  keptW = grow(keptW, n, (k) => new Float64Array(k));
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** A uint32 that orders float32 values descending (-0 and +0 equal, as the reference's comparison has them). */
function descendingKey(v: number): number {
  f32[0] = v + 0; // -0 + 0 = +0
  const b = u32[0] as number;
  const ascending = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
  return 0xffffffff - ascending;
}

/**
 * Sorts `ids[0..m)` by value descending, lower index first on ties: the reference's order. Each id is packed
 * with its value's order key into one double (32 + log2(n) <= 53 bits) so the typed array sorts natively,
 * without a JS comparator.
 */
function sortByValueDesc(x: ArrayLike<number>, ids: Int32Array, m: number): void {
  const n = x.length;
  if (n > 1 << 21) {
    ids.subarray(0, m).sort((a, b) => (x[b] as number) - (x[a] as number) || a - b);
    return;
  }
  const scale = 2 ** Math.max(1, Math.ceil(Math.log2(n)));
  sortKeys = grow(sortKeys, m, (k) => new Float64Array(k));
  const keys = sortKeys.subarray(0, m);
  for (let j = 0; j < m; j++) {
    const i = ids[j] as number;
    keys[j] = descendingKey(x[i] as number) * scale + i;
  }
  keys.sort();
  for (let j = 0; j < m; j++) ids[j] = (keys[j] as number) % scale;
}

let radixKeys = new Uint32Array(0);
let radixKeys2 = new Uint32Array(0);
let radixIds2 = new Int32Array(0);
const radixCount = new Int32Array(65536);

/** One stable counting pass over 16 bits of the keys: src -> dst. */
function radixPass(srcK: Uint32Array, srcI: Int32Array, dstK: Uint32Array, dstI: Int32Array, m: number, shift: number) {
  const count = radixCount;
  count.fill(0);
  for (let j = 0; j < m; j++) {
    const d = ((srcK[j] as number) >>> shift) & 0xffff;
    count[d] = (count[d] as number) + 1;
  }
  let sum = 0;
  for (let d = 0; d < 65536; d++) {
    const c = count[d] as number;
    count[d] = sum;
    sum += c;
  }
  for (let j = 0; j < m; j++) {
    const key = srcK[j] as number;
    const d = (key >>> shift) & 0xffff;
    const at = count[d] as number;
    count[d] = at + 1;
    dstK[at] = key;
    dstI[at] = srcI[j] as number;
  }
}

/**
 * `sortByValueDesc` for many ids given in increasing order: an LSD radix sort of 32-bit order keys made from
 * the float32 bits, in two 16-bit passes. Stable, so equal values keep their increasing ids: the same order
 * as the comparison sort.
 */
function radixSortByValueDesc(x: Float32Array, ids: Int32Array, m: number): void {
  if (radixKeys.length < m) {
    radixKeys = new Uint32Array(m);
    radixKeys2 = new Uint32Array(m);
    radixIds2 = new Int32Array(m);
  }
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const k1 = radixKeys;
  for (let j = 0; j < m; j++) {
    let b = bits[ids[j] as number] as number;
    if (b === 0x80000000) b = 0; // -0 sorts as +0
    // descending: negatives keep their bits (larger magnitude later), positives flip below them
    k1[j] = b & 0x80000000 ? b : ~b & 0x7fffffff;
  }
  radixPass(k1, ids, radixKeys2, radixIds2, m, 0);
  radixPass(radixKeys2, radixIds2, k1, ids, m, 16);
}

/** Min-heap of the best k values seen, the worst (smallest value, then largest index) at the root. */
class TopKHeap {
  vals = new Float64Array(0);
  ids = new Int32Array(0);
  size = 0;
  k = 0;

  reset(k: number): void {
    if (this.vals.length < k) {
      this.vals = new Float64Array(k);
      this.ids = new Int32Array(k);
    }
    this.size = 0;
    this.k = k;
  }

  /** Offers value v of id i. NOTE: ids must come in increasing order, so a tie never displaces a kept id. */
  offer(v: number, i: number): void {
    const vals = this.vals;
    const ids = this.ids;
    if (this.size < this.k) {
      let c = this.size++;
      while (c > 0) {
        const p = (c - 1) >> 1;
        const pv = vals[p] as number;
        if (!(v < pv || (v === pv && i > (ids[p] as number)))) break;
        vals[c] = pv;
        ids[c] = ids[p] as number;
        c = p;
      }
      vals[c] = v;
      ids[c] = i;
    } else if (this.k > 0 && v > (vals[0] as number)) {
      const size = this.size;
      let c = 0;
      for (;;) {
        const l = 2 * c + 1;
        if (l >= size) break;
        let m = l;
        const r = l + 1;
        if (r < size) {
          const lv = vals[l] as number;
          const rv = vals[r] as number;
          if (rv < lv || (rv === lv && (ids[r] as number) > (ids[l] as number))) m = r;
        }
        const mv = vals[m] as number;
        if (!(mv < v || (mv === v && (ids[m] as number) > i))) break;
        vals[c] = mv;
        ids[c] = ids[m] as number;
        c = m;
      }
      vals[c] = v;
      ids[c] = i;
    }
  }
}

const heap = new TopKHeap();

/** Indices of the `k` largest values, largest first (lower index first on ties); `among` in increasing order. */
export function topKIndices(x: ArrayLike<number>, k: number, among?: readonly number[]): number[] {
  const n = among ? among.length : x.length;
  k = Math.min(k, n);
  if (k <= 0) return [];
  heap.reset(k);
  for (let j = 0; j < n; j++) {
    const i = among ? (among[j] as number) : j;
    heap.offer(x[i] as number, i);
  }
  const out = heap.ids.slice(0, heap.size);
  sortByValueDesc(x, out, out.length);
  return Array.from(out);
}

/** log(sum(exp(x))) computed stably in float64 (index order, so the bits never depend on the path). */
export function logSumExp(x: ArrayLike<number>): number {
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < x.length; i++) if ((x[i] as number) > m) m = x[i] as number;
  if (m === Number.NEGATIVE_INFINITY) return m;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += fastExp((x[i] as number) - m);
  return m + Math.log(s);
}

/** Tokens kept when the candidate set is empty: the argmax alone, weighted as the reference weighs it. */
function keepArgmax(logits: Float32Array, max: number, inv: number): number {
  const a = argmax(logits);
  keptIds[0] = a;
  keptW[0] = Math.exp(((logits[a] as number) - max) * inv);
  return 1;
}

/** top_p over kept[0..count) (most likely first): how many stay, at least one. */
function topPCount(count: number, topP: number): number {
  let total = 0;
  for (let j = 0; j < count; j++) total += keptW[j] as number;
  const t = topP * total;
  let cum = 0;
  let keep = 0;
  while (keep < count && cum < t) cum += keptW[keep++] as number;
  return Math.max(1, keep);
}

/** Heads larger than this are not worth a partial attempt: sort everything. */
const HEAD_LIMIT = 16384;
/** Heads at least this large are radix-sorted. */
const RADIX_MIN = 2048;
/** The top_p path's first pass keeps the ids with z > -PRE_CUT. */
const PRE_CUT = 16;
const preIds = new Int32Array(HEAD_LIMIT + 1);
/** Tokens per scaled-logit bucket b (z in (-(b+1), -b]) and, from the top, the tail mass bound below bucket c. */
const bucketCount = new Float64Array(41);
const tailBound = new Float64Array(42);
const headCount = new Float64Array(42);

/**
 * top_p without top_k: the reference sorts every candidate and sums their weights in that order. Only the
 * head matters: the tokens with z > -c (within e^-c of the top one) are sorted exactly and summed in the
 * reference's order; the rest (the tail) can only add between 0 and sum over its buckets of count * e^-b
 * to the reference's total (its sums round, hence the (1 + count * 2^-52) slack). When both ends of that
 * interval put the top_p cut at the same head position, that position is the reference's, bit for bit;
 * otherwise a larger head is tried, up to all candidates (the reference's own full sort).
 */
function selectTopP(logits: Float32Array, max: number, inv: number, floor: number, topP: number): number {
  const n = logits.length;
  // NOTE: max is finite and floor in [-40, 0] here, so the top token itself is a candidate (z = 0).
  bucketCount.fill(0);
  // One pass counts the buckets and keeps the ids of z > -PRE_CUT (the likely heads) unless there are too many.
  let pre = 0;
  for (let i = 0; i < n; i++) {
    const l = logits[i] as number;
    if (l === Number.NEGATIVE_INFINITY) continue;
    const z = (l - max) * inv;
    if (z >= floor) {
      const b = -z | 0; // -z in [0, 40]
      bucketCount[b] = (bucketCount[b] as number) + 1;
      if (b < PRE_CUT && pre <= HEAD_LIMIT) preIds[pre++] = i;
    }
  }
  tailBound[41] = 0;
  for (let b = 40; b >= 0; b--) tailBound[b] = (tailBound[b + 1] as number) + (bucketCount[b] as number) * Math.exp(-b);
  headCount[0] = 0;
  for (let b = 0; b <= 40; b++) headCount[b + 1] = (headCount[b] as number) + (bucketCount[b] as number);
  const m = headCount[41] as number;
  // First cut: the smallest whose tail could move the total by at most 1e-4 (the top token weighs 1: a cut
  // this close to a running sum is rare), as long as its head stays small; then larger ones, then all.
  let c = 1;
  while (c < 41 && (tailBound[c] as number) > 1e-4 && (headCount[c + 1] as number) <= HEAD_LIMIT) c++;
  if ((tailBound[c] as number) > 1e-4) c = 41; // no small head can decide: a flat distribution, sort it all
  for (; c <= 41; c = c >= 41 ? 42 : Math.min(41, c + 4)) {
    if (c < 41 && (headCount[c] as number) > HEAD_LIMIT) c = 41;
    const cut = c >= 41 ? Number.NEGATIVE_INFINITY : -c;
    let h = 0;
    if (c <= PRE_CUT && pre <= HEAD_LIMIT)
      for (let j = 0; j < pre; j++) {
        const i = preIds[j] as number;
        if (((logits[i] as number) - max) * inv > cut) keptIds[h++] = i;
      }
    else
      for (let i = 0; i < n; i++) {
        const l = logits[i] as number;
        if (l === Number.NEGATIVE_INFINITY) continue;
        const z = (l - max) * inv;
        if (z >= floor && z > cut) keptIds[h++] = i;
      }
    // NOTE: the head was gathered in increasing id order, as the radix sort needs.
    if (h >= RADIX_MIN) radixSortByValueDesc(logits, keptIds, h);
    else sortByValueDesc(logits, keptIds, h);
    for (let j = 0; j < h; j++) keptW[j] = fastExp(((logits[keptIds[j] as number] as number) - max) * inv);
    const tail = m - h;
    if (tail === 0) return topPCount(h, topP);
    let head = 0;
    for (let j = 0; j < h; j++) head += keptW[j] as number;
    const hi = (head + (tailBound[c] as number) * (1 + 1e-12)) * (1 + (tail + 4) * 2 ** -52);
    const tLo = topP * head;
    const tHi = topP * hi;
    // The reference keeps the first k whose running sum reaches topP * total (at least one token).
    let cum = 0;
    let kLo = cum >= tLo ? 0 : -1;
    let kHi = cum >= tHi ? 0 : -1;
    for (let j = 0; j < h && kHi < 0; j++) {
      cum += keptW[j] as number;
      if (kLo < 0 && cum >= tLo) kLo = j + 1;
      if (cum >= tHi) kHi = j + 1;
    }
    if (kHi >= 0 && kLo === kHi) return Math.max(1, kHi);
  }
  throw new Error("sampler: the top_p head reached every candidate without deciding"); // unreachable: tail 0
}

/** top_k (with min_p and top_p): the k best candidates by a heap, sorted, then the top_p cut over them. */
function selectTopK(logits: Float32Array, max: number, inv: number, floor: number, k: number, topP: number): number {
  const n = logits.length;
  heap.reset(k);
  // Most tokens lose against the heap's worst at once: one comparison, no arithmetic.
  let worst = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    const l = logits[i] as number;
    if (!(l > worst)) continue; // also skips -Infinity while the heap fills (the reference excludes it)
    if ((l - max) * inv >= floor) {
      heap.offer(l, i);
      if (heap.size === k) worst = heap.vals[0] as number;
    }
  }
  const h = heap.size;
  keptIds.set(heap.ids.subarray(0, h));
  sortByValueDesc(logits, keptIds, h);
  for (let j = 0; j < h; j++) keptW[j] = fastExp(((logits[keptIds[j] as number] as number) - max) * inv);
  return topP < 1 ? topPCount(h, topP) : h;
}

/**
 * Fills keptIds / keptW with the tokens that survive min_p, top_k and top_p and their (unnormalised) weights,
 * in the reference's order; returns how many. Token for token what the pre-rewrite sampler kept
 * (`sampler-reference.test-support.ts`), in O(vocabulary) instead of a sort of it.
 */
function select(logits: Float32Array, p: Pick<SamplingParams, "temperature" | "topK" | "topP" | "minP">): number {
  const n = logits.length;
  ensureVocab(n);
  const inv = 1 / p.temperature;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) if ((logits[i] as number) > max) max = logits[i] as number;
  // In temperature-scaled units z = l / T, prob(i) / prob(top) = exp(z_i - z_max).
  // Tokens below e^-40 of the top one carry < 1e-12 of the mass over this vocabulary: never in a top_p set
  // with top_p < 1, so they are dropped (they are kept when nothing filters).
  let floor = p.minP > 0 ? Math.log(p.minP) : Number.NEGATIVE_INFINITY;
  const topK = p.topK > 0 && p.topK < n;
  const filtering = topK || p.topP < 1;
  if (filtering) floor = Math.max(floor, -40);
  // No candidate at all (every logit -Infinity, a +Infinity one, or min_p > 1): the reference keeps the argmax.
  if (filtering && !(Number.isFinite(max) && floor <= 0)) return keepArgmax(logits, max, inv);
  if (topK) return selectTopK(logits, max, inv, floor, p.topK, p.topP);
  if (filtering) return selectTopP(logits, max, inv, floor, p.topP);
  // Nothing filters but min_p: every candidate, in index order.
  let m = 0;
  for (let i = 0; i < n; i++) {
    const l = logits[i] as number;
    if (l === Number.NEGATIVE_INFINITY) continue;
    const z = (l - max) * inv;
    if (z >= floor) {
      keptIds[m] = i;
      keptW[m] = fastExp(z);
      m++;
    }
  }
  return m === 0 ? keepArgmax(logits, max, inv) : m;
}

/** Tokens that survive min_p, top_k and top_p, most likely first, with their (unnormalised) weights. */
export function candidates(
  logits: Float32Array,
  p: Pick<SamplingParams, "temperature" | "topK" | "topP" | "minP">,
): { ids: number[]; weights: number[] } {
  const count = select(logits, p);
  return { ids: Array.from(keptIds.subarray(0, count)), weights: Array.from(keptW.subarray(0, count)) };
}

/** Draws one token from processed logits: argmax when temperature is 0, else from the filtered distribution. */
export function sampleToken(
  logits: Float32Array,
  p: Pick<SamplingParams, "temperature" | "topK" | "topP" | "minP">,
  rng: Rng,
): number {
  if (p.temperature <= 1e-5) return argmax(logits);
  const count = select(logits, p);
  let total = 0;
  for (let j = 0; j < count; j++) total += keptW[j] as number;
  const u = rng.next() * total;
  let cum = 0;
  for (let j = 0; j < count; j++) {
    cum += keptW[j] as number;
    if (u < cum) return keptIds[j] as number;
  }
  return keptIds[count - 1] as number;
}

/** Log probability of `token` and the `topN` most likely tokens under the raw logits. */
export function logprobsOf(
  logits: Float32Array,
  token: number,
  topN: number,
): { chosen: { tokenId: number; logprob: number }; top: { tokenId: number; logprob: number }[] } {
  // One pass for the max and the top-N heap (what logSumExp and topKIndices compute), one for the exps.
  const n = logits.length;
  const k = Math.max(0, Math.min(topN, n));
  heap.reset(k);
  let max = Number.NEGATIVE_INFINITY;
  let worst = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    const v = logits[i] as number;
    if (v > max) max = v;
    if (k === 0) continue;
    if (heap.size < k) {
      heap.offer(v, i);
      if (heap.size === k) worst = heap.vals[0] as number;
    } else if (v > worst) {
      heap.offer(v, i);
      worst = heap.vals[0] as number;
    }
  }
  let lse = max;
  if (max !== Number.NEGATIVE_INFINITY) {
    let s = 0;
    for (let i = 0; i < n; i++) s += fastExp((logits[i] as number) - max);
    lse = max + Math.log(s);
  }
  const top = heap.ids.slice(0, heap.size);
  sortByValueDesc(logits, top, top.length);
  const lp = (id: number) => (logits[id] as number) - lse;
  return {
    chosen: { tokenId: token, logprob: lp(token) },
    top: Array.from(top, (id) => ({ tokenId: id, logprob: lp(id) })),
  };
}

let penalised = new Float32Array(0);

/** A reusable copy of `logits` to apply penalties to (valid until the next call). */
export function scratchCopy(logits: Float32Array): Float32Array {
  if (penalised.length < logits.length) penalised = new Float32Array(logits.length);
  const x = penalised.subarray(0, logits.length);
  x.set(logits);
  return x;
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
