/**
 * Sampler benchmark (not a test): the per-token cost of what `nextToken` does with one sequence's logits
 * (copy, penalties, sampling, logprobs) at the real vocabulary, the O(n) sampler against the pre-rewrite one
 * (`sampler-reference.test-support.ts`, which sorted every candidate in JS), on the same logits and seeds.
 *
 *   npx tsx bench/sampler.ts [--vocab 151666] [--iters 200] [--ref-iters 20] [--shape peaky,flat]
 *
 * Logit shapes:
 *  - peaky: what a trained LLM emits: a Gaussian bulk (sd 2.5) and a head of a few dozen tokens 6..20 above
 *    it (top_p 0.8 keeps a handful of tokens);
 *  - flat: a random-weight model such as tiny-a: Gaussian noise (sd 1), so top_p 0.8 keeps ~100k tokens.
 * Each case runs on 8 different logit vectors in turn; the tokens drawn are checked equal between the two.
 */

import { parseArgs } from "node:util";
import { applyPenalties, argmax, logprobsOf, Rng, sampleToken, scratchCopy } from "../gpu-service/src/engine/sampler";
import { refLogprobsOf, refSampleToken } from "../gpu-service/src/engine/sampler-reference.test-support";
import type { SamplingParams } from "../gpu-service/src/engine/types";

const { values: args } = parseArgs({
  options: {
    vocab: { type: "string", default: "151666" },
    iters: { type: "string", default: "200" },
    "ref-iters": { type: "string", default: "20" },
    shape: { type: "string", default: "peaky,flat" },
  },
});
const V = Number(args.vocab);
const iters = Number(args.iters);
const refIters = Number(args["ref-iters"]);

type Params = Pick<
  SamplingParams,
  "temperature" | "topP" | "topK" | "minP" | "repetitionPenalty" | "presencePenalty" | "frequencyPenalty" | "logitBias"
> & { topLogprobs: number };
const base = { presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map<number, number>(), minP: 0, topK: 0 };
const CASES: [string, Params][] = [
  ["greedy", { ...base, temperature: 0, topP: 1, repetitionPenalty: 1, topLogprobs: -1 }],
  ["reference preset", { ...base, temperature: 0.7, topP: 0.8, topK: 100, repetitionPenalty: 1.05, topLogprobs: -1 }],
  [
    "reference preset, no rep. penalty",
    { ...base, temperature: 0.7, topP: 0.8, topK: 100, repetitionPenalty: 1, topLogprobs: -1 },
  ],
  ["top_p 0.8 alone", { ...base, temperature: 0.7, topP: 0.8, repetitionPenalty: 1, topLogprobs: -1 }],
  ["top_p 0.8 + rep. penalty 1.05", { ...base, temperature: 0.7, topP: 0.8, repetitionPenalty: 1.05, topLogprobs: -1 }],
  ["min_p 0.05", { ...base, temperature: 1, topP: 1, minP: 0.05, repetitionPenalty: 1, topLogprobs: -1 }],
  [
    "min_p 0.05 + rep. penalty 1.05",
    { ...base, temperature: 1, topP: 1, minP: 0.05, repetitionPenalty: 1.05, topLogprobs: -1 },
  ],
  ["top_logprobs 20 (greedy)", { ...base, temperature: 0, topP: 1, repetitionPenalty: 1, topLogprobs: 20 }],
  [
    "top_logprobs 20 + reference preset",
    { ...base, temperature: 0.7, topP: 0.8, topK: 100, repetitionPenalty: 1.05, topLogprobs: 20 },
  ],
  ["temperature 1 alone (no filter)", { ...base, temperature: 1, topP: 1, repetitionPenalty: 1, topLogprobs: -1 }],
];

function makeLogits(shape: string, seed: number): Float32Array {
  const rng = new Rng(BigInt(seed));
  const normal = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  const x = new Float32Array(V);
  if (shape === "flat") {
    for (let i = 0; i < V; i++) x[i] = normal();
    return x;
  }
  for (let i = 0; i < V; i++) x[i] = normal() * 2.5;
  for (let h = 0; h < 40; h++) x[Math.floor(rng.next() * V)] = 20 - 14 * (h / 40) ** 0.5 + normal() * 0.3;
  return x;
}

/** What nextToken does with one sequence's logits, with either sampler. */
function step(
  logits: Float32Array,
  p: Params,
  history: number[],
  rng: Rng,
  old: boolean,
): { token: number; lp: number } {
  const x = old ? Float32Array.from(logits) : scratchCopy(logits);
  applyPenalties(x, p, history);
  const token = old ? refSampleToken(x, p, rng) : sampleToken(x, p, rng);
  let lp = 0;
  if (p.topLogprobs >= 0) {
    const r = old ? refLogprobsOf(logits, token, p.topLogprobs) : logprobsOf(logits, token, p.topLogprobs);
    lp = r.chosen.logprob + (r.top[0]?.logprob ?? 0);
  }
  return { token, lp };
}

function measure(shape: string, p: Params, n: number, old: boolean): { median: number; mean: number; out: string } {
  const vectors = Array.from({ length: 8 }, (_, i) => makeLogits(shape, i + 1));
  const history = Array.from({ length: 64 }, (_, i) => (i * 7919) % V);
  const rng = new Rng(42n);
  const times: number[] = [];
  const out: string[] = [];
  for (let i = 0; i < 3; i++) step(vectors[i % 8] as Float32Array, p, history, new Rng(1n), old); // warm-up
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = step(vectors[i % 8] as Float32Array, p, history, rng, old);
    times.push(performance.now() - t0);
    out.push(`${r.token}:${r.lp}`);
  }
  times.sort((a, b) => a - b);
  return {
    median: times[Math.floor(n / 2)] as number,
    mean: times.reduce((s, t) => s + t, 0) / n,
    out: out.slice(0, Math.min(n, refIters)).join(","),
  };
}

/** One plain pass over the vocabulary (argmax), median ms: the yardstick for how loaded the machine is. */
function plainPass(): number {
  const x = makeLogits("flat", 99);
  const t: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    argmax(x);
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[100] as number;
}

console.log(
  `sampler per token, vocabulary ${V}: ms (median / mean), new over ${iters} and old over ${refIters} tokens`,
);
console.log(`one plain pass over the vocabulary (argmax): ${plainPass().toFixed(3)} ms median (load yardstick)`);
for (const shape of (args.shape as string).split(",")) {
  console.log(`\nlogits: ${shape}`);
  console.log(`${"case".padEnd(38)} ${"new ms".padStart(14)} ${"old ms".padStart(16)}  speed-up  same tokens`);
  for (const [name, p] of CASES) {
    const fresh = measure(shape, p, iters, false);
    const old = measure(shape, p, refIters, true);
    const fmt = (m: { median: number; mean: number }) => `${m.median.toFixed(3)} / ${m.mean.toFixed(3)}`;
    console.log(
      `${name.padEnd(38)} ${fmt(fresh).padStart(14)} ${fmt(old).padStart(16)}  ${(old.median / fresh.median).toFixed(1).padStart(7)}x  ${fresh.out === old.out ? "yes" : "NO"}`,
    );
  }
}
