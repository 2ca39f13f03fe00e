/**
 * The O(n) sampler against the pre-rewrite one (kept verbatim in sampler-reference.test-support.ts): the same
 * candidates and weights, the same token for the same seed, the same logprobs, bit for bit, over random
 * logits (peaky, flat, tied, masked with -Infinity) and parameter combinations.
 */
import { describe, expect, it } from "vitest";
import { applyPenalties, candidates, logprobsOf, logSumExp, Rng, sampleToken, topKIndices } from "./sampler";
import {
  refCandidates,
  refLogprobsOf,
  refLogSumExp,
  refSampleToken,
  refTopKIndices,
} from "./sampler-reference.test-support";

type Shape = "gauss" | "peaky" | "flat" | "ties" | "masked" | "mostlyMasked" | "allMasked" | "signedZeros";

/** Random logits of one shape, from a seeded generator (Box-Muller normals). */
function makeLogits(rng: Rng, n: number, shape: Shape): Float32Array {
  const normal = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  const x = new Float32Array(n);
  const sd = [0.3, 1, 2.5, 6][Math.floor(rng.next() * 4)] as number;
  for (let i = 0; i < n; i++) x[i] = normal() * sd;
  if (shape === "peaky") {
    const spikes = 1 + Math.floor(rng.next() * 8);
    for (let s = 0; s < spikes; s++) x[Math.floor(rng.next() * n)] = 8 + rng.next() * 20;
  } else if (shape === "flat") for (let i = 0; i < n; i++) x[i] = (x[i] as number) * 0.05;
  else if (shape === "ties") for (let i = 0; i < n; i++) x[i] = Math.round((x[i] as number) * 2) / 2;
  else if (shape === "masked" || shape === "mostlyMasked") {
    const keep = shape === "masked" ? 0.6 : 3 / n;
    for (let i = 0; i < n; i++) if (rng.next() > keep) x[i] = Number.NEGATIVE_INFINITY;
    x[Math.floor(rng.next() * n)] = Math.round(normal() * 4); // at least one survivor
  } else if (shape === "allMasked") x.fill(Number.NEGATIVE_INFINITY);
  else if (shape === "signedZeros") for (let i = 0; i < n; i++) x[i] = rng.next() < 0.5 ? -0 : i % 3 === 0 ? 0 : -1;
  return x;
}

const SHAPES: Shape[] = ["gauss", "peaky", "flat", "ties", "masked", "mostlyMasked", "allMasked", "signedZeros"];

function randomParams(rng: Rng, n: number) {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rng.next() * a.length)] as T;
  return {
    temperature: pick([0, 0.2, 0.7, 1, 1.5]),
    topP: pick([1, 1, 0.99, 0.95, 0.8, 0.5, 0.1]),
    topK: pick([0, 0, 1, 2, 20, 100, n - 1, n, n + 7]),
    minP: pick([0, 0, 0, 0.01, 0.05, 0.3, 1]),
  };
}

/** Compares everything the engine reads from the sampler for one logits vector and one parameter set. */
function expectSame(logits: Float32Array, p: ReturnType<typeof randomParams>, seed: bigint, draws = 6): void {
  if (p.temperature > 1e-5) {
    const a = candidates(logits, p);
    const b = refCandidates(logits, p);
    expect(a.ids).toEqual(b.ids);
    expect(a.weights).toEqual(b.weights);
  }
  const r1 = new Rng(seed);
  const r2 = new Rng(seed);
  for (let d = 0; d < draws; d++) expect(sampleToken(logits, p, r1)).toBe(refSampleToken(logits, p, r2));
  // The generators stayed in step (each non-greedy draw takes exactly one number).
  expect(r1.nextU32()).toBe(r2.nextU32());
}

describe("sampler equivalence with the pre-rewrite algorithm", () => {
  it("keeps the same tokens, weights and draws on small vocabularies (many seeds and parameters)", () => {
    const rng = new Rng(7n);
    let cases = 0;
    for (let trial = 0; trial < 3000; trial++) {
      const n = [2, 5, 17, 64, 300, 2000][trial % 6] as number;
      const logits = makeLogits(rng, n, SHAPES[trial % SHAPES.length] as Shape);
      const p = randomParams(rng, n);
      expectSame(logits, p, BigInt(trial));
      cases++;
    }
    expect(cases).toBe(3000);
  });

  it("keeps the same tokens at the real vocabulary (151,666) with and without the reference penalties", () => {
    const rng = new Rng(99n);
    const n = 151_666;
    const params = [
      { temperature: 0.7, topP: 0.8, topK: 100, minP: 0 }, // the reference preset
      { temperature: 0.7, topP: 0.8, topK: 0, minP: 0 }, // OpenAI SDK users: top_p alone
      { temperature: 1, topP: 1, topK: 0, minP: 0.05 },
      { temperature: 1, topP: 0.95, topK: 0, minP: 0.02 },
      { temperature: 1.3, topP: 1, topK: 0, minP: 0 },
      { temperature: 0.7, topP: 1, topK: 50, minP: 0 },
    ];
    for (const [t, shape] of (["peaky", "gauss", "ties", "masked"] as const).entries()) {
      const logits = makeLogits(rng, n, shape);
      // The reference preset's repetition penalty over a made-up history, as nextToken applies it.
      const history = Array.from({ length: 40 }, () => Math.floor(rng.next() * n));
      const penalised = Float32Array.from(logits);
      applyPenalties(
        penalised,
        { repetitionPenalty: 1.05, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map() },
        history,
      );
      for (const [k, p] of params.entries()) {
        expectSame(logits, p, BigInt(100 * t + k), 2);
        expectSame(penalised, p, BigInt(100 * t + k + 50), 2);
      }
    }
  });

  it("finds the top_p cut exactly where the head's bounds are tight (nucleus at the edge of a head)", () => {
    // Mass arranged so the cut falls at tokens whose weights sit just around e^-3 .. e^-10 of the top one,
    // with a long tail just under each head boundary: the partial heads cannot decide and larger ones must.
    const rng = new Rng(5n);
    const n = 20_000;
    for (let trial = 0; trial < 12; trial++) {
      const x = new Float32Array(n);
      const edge = 2 + rng.next() * 12;
      for (let i = 0; i < n; i++) x[i] = -edge - rng.next() * 0.5 + (i % 997 === 0 ? edge : 0);
      x[Math.floor(rng.next() * n)] = 0;
      for (const topP of [0.3, 0.5, 0.8, 0.9, 0.999])
        expectSame(x, { temperature: 1, topP, topK: 0, minP: 0 }, BigInt(trial), 2);
    }
  });

  it("reports the same logprobs and top alternatives (ties and -Infinity included)", () => {
    const rng = new Rng(11n);
    for (let trial = 0; trial < 400; trial++) {
      const n = trial < 8 ? 151_666 : ([3, 40, 700, 5000] as const)[trial % 4];
      const logits = makeLogits(rng, n, SHAPES[trial % SHAPES.length] as Shape);
      const token = Math.floor(rng.next() * n);
      for (const topN of [0, 1, 5, 20])
        expect(logprobsOf(logits, token, topN)).toEqual(refLogprobsOf(logits, token, topN));
      expect(Object.is(logSumExp(logits), refLogSumExp(logits))).toBe(true);
      const among = Array.from({ length: n }, (_, i) => i).filter(() => rng.next() < 0.3);
      expect(topKIndices(logits, 7, among)).toEqual(refTopKIndices(logits, 7, among));
    }
  });

  it("sorts vocabularies too large to pack an index beside the value key (the comparator fallback)", () => {
    const rng = new Rng(3n);
    const n = 2 ** 21 + 5;
    const logits = makeLogits(rng, n, "ties");
    expectSame(logits, { temperature: 0.7, topP: 0.8, topK: 100, minP: 0 }, 1n);
  });
});
