import { describe, expect, it } from "vitest";
import { BeamSearch } from "./beam-search";
import { OutputText } from "./output-text";
import { applyPenalties, candidates, logprobsOf, Rng, sampleToken, topKIndices } from "./sampler";

const enc = new TextEncoder();
/** Tokenizer stand-in: token id -> its text from a table. */
const table = (words: string[]) => ({ tokenBytes: (id: number) => enc.encode(words[id] ?? "") });

describe("sampler", () => {
  it("applies the reference repetition penalty and OpenAI penalties over generated tokens", () => {
    const l = new Float32Array([2, -1, 0.5, 3]);
    const none = new Map<number, number>();
    applyPenalties(l, { repetitionPenalty: 1.25, presencePenalty: 0, frequencyPenalty: 0, logitBias: none }, [0, 1, 0]);
    expect(Array.from(l)).toEqual([1.600000023841858, -1.25, 0.5, 3]);
    const m = new Float32Array([2, -1, 0.5, 3]);
    const p = { repetitionPenalty: 1, presencePenalty: 0.5, frequencyPenalty: 0.25, logitBias: none };
    applyPenalties(m, p, [0, 1, 0], [3]);
    // token 0: 2 - 0.5 - 2*0.25 = 1; token 1: -1 - 0.5 - 0.25 = -1.75; token 3 banned.
    expect(Array.from(m)).toEqual([1, -1.75, 0.5, Number.NEGATIVE_INFINITY]);
    // logit_bias comes first: token 2 gets +4, token 0 gets -3 and then the reference penalty multiplies it.
    const b = new Float32Array([2, -1, 0.5, 3]);
    const bias = new Map([
      [2, 4],
      [0, -3],
    ]);
    applyPenalties(b, { repetitionPenalty: 2, presencePenalty: 0, frequencyPenalty: 0, logitBias: bias }, [0]);
    expect(Array.from(b)).toEqual([-2, -1, 4.5, 3]);
  });

  it("masks with top_k, top_p and min_p", () => {
    // probabilities at T=1 are proportional to exp(l): [e^3, e^2, e^1, e^0, e^-5]
    const l = new Float32Array([1, 3, 0, 2, -4]);
    expect(candidates(l, { temperature: 1, topK: 2, topP: 1, minP: 0 }).ids).toEqual([1, 3]);
    // mass: .6364 .2341 .0861 .0317 .0002 -> top_p .8 keeps the first two (cum .87 >= .8)
    expect(candidates(l, { temperature: 1, topK: 0, topP: 0.8, minP: 0 }).ids).toEqual([1, 3]);
    expect(candidates(l, { temperature: 1, topK: 0, topP: 0.9, minP: 0 }).ids).toEqual([1, 3, 0]);
    // min_p .3: keep p >= .3 * p_top, i.e. l >= 3 + ln .3 = 1.796
    expect(candidates(l, { temperature: 1, topK: 0, topP: 1, minP: 0.3 }).ids.sort()).toEqual([1, 3]);
    // Temperature 2 flattens: l/2 >= 1.5 + ln .3 -> l >= 0.592
    expect(candidates(l, { temperature: 2, topK: 0, topP: 1, minP: 0.3 }).ids.sort()).toEqual([0, 1, 3]);
    expect(topKIndices(new Float32Array([5, 7, 7, 1]), 3)).toEqual([1, 2, 0]);
  });

  it("is greedy at temperature 0 and reproducible with a seed", () => {
    const l = new Float32Array(50).map((_, i) => Math.sin(i * 1.7));
    const p = { temperature: 0, topK: 0, topP: 1, minP: 0 };
    expect(sampleToken(l, p, new Rng(1n))).toBe(12); // sin(12 * 1.7) = 0.99979
    const q = { temperature: 1.5, topK: 20, topP: 0.95, minP: 0 };
    const draw = (seed: bigint) => {
      const rng = new Rng(seed);
      return Array.from({ length: 40 }, () => sampleToken(l, q, rng));
    };
    expect(draw(42n)).toEqual(draw(42n));
    expect(draw(42n)).not.toEqual(draw(43n));
    // Every draw respects top_k = 20.
    const allowed = new Set(topKIndices(l, 20));
    expect(draw(7n).every((t) => allowed.has(t))).toBe(true);
    // Different streams of one seed differ (n > 1 children).
    expect(new Rng(5n, 0).nextU32()).not.toBe(new Rng(5n, 1).nextU32());
  });

  it("samples in proportion to the probabilities", () => {
    const l = new Float32Array([Math.log(0.2), Math.log(0.5), Math.log(0.3)]);
    const rng = new Rng(123n);
    const counts = [0, 0, 0];
    for (let i = 0; i < 20000; i++) {
      const t = sampleToken(l, { temperature: 1, topK: 0, topP: 1, minP: 0 }, rng);
      counts[t] = (counts[t] ?? 0) + 1;
    }
    expect(Math.abs((counts[1] as number) / 20000 - 0.5)).toBeLessThan(0.02);
    expect(Math.abs((counts[0] as number) / 20000 - 0.2)).toBeLessThan(0.02);
  });

  it("reports raw log probabilities with top alternatives", () => {
    const l = new Float32Array([Math.log(0.1), Math.log(0.6), Math.log(0.3)]);
    const lp = logprobsOf(l, 2, 2);
    expect(lp.chosen.tokenId).toBe(2);
    expect(lp.chosen.logprob).toBeCloseTo(Math.log(0.3), 6);
    expect(lp.top.map((t) => t.tokenId)).toEqual([1, 2]);
    expect(lp.top[0]?.logprob).toBeCloseTo(Math.log(0.6), 6);
  });
});

describe("OutputText", () => {
  it("never leaks a stop string that spans tokens, and holds back possible prefixes", () => {
    const tok = table(["Hello", " wor", "ld", "!", " EN", "D", "x"]);
    const t = new OutputText(tok, [" END", "world!"]);
    expect(t.push(0)).toEqual({ text: "Hello" });
    expect(t.push(1)).toEqual({ text: " " }); // "wor" may start "world!": held back
    expect(t.push(2)).toEqual({ text: "" }); // "world" too
    expect(t.push(3)).toEqual({ text: "", stop: "world!" });
    expect(t.push(6)).toEqual({ text: "" });
    const u = new OutputText(tok, [" END"]);
    expect(u.push(0)).toEqual({ text: "Hello" });
    expect(u.push(4)).toEqual({ text: "" });
    expect(u.push(6)).toEqual({ text: " ENx" });
    expect(u.push(4)).toEqual({ text: "" });
    expect(u.push(5)).toEqual({ text: "", stop: " END" });
  });

  it("emits held-back text at the end and joins UTF-8 split over tokens", () => {
    const bytes = [new Uint8Array([0xe2, 0x82]), new Uint8Array([0xac]), enc.encode("a"), new Uint8Array([0xe2])];
    const t = new OutputText({ tokenBytes: (id) => bytes[id] as Uint8Array }, ["ab"]);
    expect(t.push(0)).toEqual({ text: "" });
    expect(t.push(1)).toEqual({ text: "€" });
    expect(t.push(2)).toEqual({ text: "" }); // "a" may start "ab"
    expect(t.push(3)).toEqual({ text: "" }); // an incomplete character
    expect(t.flush()).toBe("a\uFFFD");
  });

  it("keeps special tokens' text as the reference does, or leaves it out with skip_special_tokens", () => {
    const tok = { ...table(["a", "<ref>", "b"]), isSpecial: (id: number) => id === 1 };
    const keep = new OutputText(tok, []);
    const skip = new OutputText(tok, [], true);
    expect([0, 1, 2].map((id) => keep.push(id).text).join("")).toBe("a<ref>b");
    expect([0, 1, 2].map((id) => skip.push(id).text).join("")).toBe("ab");
  });
});

describe("BeamSearch", () => {
  // Vocabulary: 0 = eos, 1..3 words. Step logits per beam depend only on the last token.
  const dist: Record<number, number[]> = {
    [-1]: [0.05, 0.5, 0.4, 0.05], // first step
    1: [0.6, 0.1, 0.2, 0.1],
    2: [0.1, 0.1, 0.1, 0.7],
    3: [0.7, 0.1, 0.1, 0.1],
  };
  const logitsFor = (tokens: readonly number[]) =>
    new Float32Array((dist[tokens[tokens.length - 1] ?? -1] as number[]).map(Math.log));
  const search = (bs: BeamSearch) => {
    let beams = [{ tokens: [] as number[], score: 0 }];
    let steps = 0;
    while (!bs.done && steps < 10) {
      const ch = bs.step(
        beams,
        beams.map((b) => logitsFor(b.tokens)),
      );
      beams = ch.map((c) => ({ tokens: [...(beams[c.parent]?.tokens ?? []), c.token], score: c.score }));
      steps++;
    }
    return { beams, steps };
  };

  it("follows transformers on a tiny fixed distribution", () => {
    const bs = new BeamSearch(2, 1, [0]);
    const { beams, steps } = search(bs);
    // Step 1: beams [1] (ln .5), [2] (ln .4).
    // Step 2: [1,eos] = ln .3 /2 = -0.602 (hyp); beams [2,3] ln .28, [1,2] ln .1
    // Step 3: [2,3,eos] ln .196 / 3 = -0.543 (hyp); beams [1,2,3] ln .07, [2,3,1] ln .028.
    //   Not done: the best candidate -1.630 / 3 = -0.543 beats the worst hypothesis -0.602.
    // Step 4: best candidate [1,2,3,eos] ln .049 / 4 = -0.754 <= -0.602 (not added): done.
    expect(steps).toBe(4);
    expect(bs.hyps.map((h) => h.tokens)).toEqual([[2, 3], [1]]);
    expect(bs.hyps[0]?.score).toBeCloseTo(Math.log(0.196) / 3, 6);
    expect(bs.hyps[1]?.score).toBeCloseTo(Math.log(0.3) / 2, 6);
    expect(bs.finalize(beams, 1).map((h) => h.tokens)).toEqual([[2, 3]]);
  });

  it("ranks finished beams by summed log-probs / length^length_penalty", () => {
    // length_penalty 0: raw sums, so the short [1] (ln .3 = -1.20) beats [2,3] (ln .196 = -1.63).
    const bs = new BeamSearch(2, 1, [0], 0, 0);
    search(bs);
    expect(bs.hyps.map((h) => h.tokens)).toEqual([[1], [2, 3]]);
    expect(bs.hyps[0]?.score).toBeCloseTo(Math.log(0.3), 6);
  });

  it("penalises repeated tokens on log-probs (x1.2) before ranking", () => {
    const bs = new BeamSearch(1, 1.2, [0]);
    const l = new Float32Array([Math.log(0.01), Math.log(0.5), Math.log(0.49)]);
    // Without the penalty token 1 wins; token 1 already generated: ln .5 * 1.2 = -0.832 < ln .49 = -0.713.
    expect(bs.step([{ tokens: [1], score: 0 }], [l])[0]).toMatchObject({ token: 2 });
  });
});
