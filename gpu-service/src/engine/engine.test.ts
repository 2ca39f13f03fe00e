import { describe, expect, it } from "vitest";
import { Engine, type EngineConfig } from "./engine";
import { FakeModel, type FakeModelOptions, fakeTokens } from "./fake-model.test-support";
import { greedyParams } from "./sampler";
import type { EngineEvent, EngineRequest, MediaInput, SamplingParams } from "./types";

const GREEDY: SamplingParams = greedyParams(12);
const SAMPLED: SamplingParams = { ...GREEDY, temperature: 0.8, topP: 0.9, topK: 20, seed: 99n };

const CFG: EngineConfig = {
  maxBatchTokens: 64,
  maxRunning: 64,
  maxWaiting: 64,
  encoderCacheBytes: 1 << 20,
  enablePrefixCaching: true,
  terminators: [63],
};

let nextId = 0;
function request(tokens: number[], params: Partial<SamplingParams> = {}, media: MediaInput[] = [], priority = 0) {
  const req: EngineRequest = {
    id: `r${nextId++}`,
    prompt: { tokenIds: tokens, media, counts: { text: tokens.length, image: 0, video: 0, total: tokens.length } },
    params: { ...GREEDY, ...params },
    priority,
  };
  return req;
}

/** An image of `slices` slices of 14x14 whose placeholders (4 each) start at `offset`. */
function image(hashSeed: number, offset: number, slices = 1): MediaInput {
  return {
    modality: "image",
    contentHash: `img${hashSeed}`,
    slices: Array.from({ length: slices }, (_, k) => ({
      width: 14,
      height: 14,
      rgb: new Uint8Array(14 * 14 * 3).fill(hashSeed * 10 + k),
      tokenOffset: offset + 4 * k,
    })),
  };
}

interface Result {
  events: EngineEvent[];
  tokens: number[][];
  text: string[];
  final?: Extract<EngineEvent, { type: "final" }>;
  ends: Extract<EngineEvent, { type: "choice_end" }>[];
}

function collect(engine: Engine, req: EngineRequest): Result {
  const r: Result = { events: [], tokens: [], text: [], ends: [] };
  engine.add(req, (ev) => {
    r.events.push(ev);
    if (ev.type === "token") {
      r.tokens[ev.index] = [...(r.tokens[ev.index] ?? []), ...ev.tokenIds];
      r.text[ev.index] = (r.text[ev.index] ?? "") + ev.text;
    } else if (ev.type === "final") r.final = ev;
    else if (ev.type === "choice_end") r.ends.push(ev);
  });
  return r;
}

async function drain(engine: Engine, maxSteps = 10_000) {
  for (let i = 0; i < maxSteps && engine.hasWork(); i++) await engine.step();
  expect(engine.hasWork()).toBe(false);
}

function make(model: FakeModelOptions = {}, cfg: Partial<EngineConfig> = {}) {
  const m = new FakeModel(model);
  return { model: m, engine: new Engine(m, fakeTokens, { ...CFG, ...cfg }) };
}

const prompt = (seed: number, n: number) => Array.from({ length: n }, (_, i) => (seed * 7 + i * 3) % 60);

describe("Engine", () => {
  it("gives the same greedy and seeded tokens alone and batched with 15 others", async () => {
    const alone = make();
    const a = collect(alone.engine, request(prompt(1, 9)));
    const s = collect(alone.engine, request(prompt(2, 5), SAMPLED));
    await drain(alone.engine);
    expect(a.tokens[0]).toHaveLength(12);

    const batched = make();
    const others = Array.from({ length: 14 }, (_, i) =>
      collect(batched.engine, request(prompt(i + 3, 3 + i), i % 2 ? SAMPLED : {})),
    );
    const a2 = collect(batched.engine, request(prompt(1, 9)));
    const s2 = collect(batched.engine, request(prompt(2, 5), SAMPLED));
    await drain(batched.engine);
    expect(a2.tokens).toEqual(a.tokens);
    expect(s2.tokens).toEqual(s.tokens);
    expect(others.every((o) => o.final !== undefined)).toBe(true);
    expect(batched.engine.pool.numUsed).toBe(0);
  });

  it("produces the same tokens after preemption and recompute", async () => {
    const ref = make({ numBlocks: 64 });
    const refs = [0, 1, 2, 3].map((i) =>
      collect(ref.engine, request(prompt(i, 6), i % 2 ? SAMPLED : { maxTokens: 14 })),
    );
    await drain(ref.engine);

    // 12 blocks of 4 tokens: four requests growing to 20 tokens each cannot all stay resident.
    const tight = make({ numBlocks: 12 });
    const outs = [0, 1, 2, 3].map((i) =>
      collect(tight.engine, request(prompt(i, 6), i % 2 ? SAMPLED : { maxTokens: 14 })),
    );
    await drain(tight.engine);
    expect(tight.engine.stats().preemptions).toBeGreaterThan(0);
    expect(outs.map((o) => o.tokens)).toEqual(refs.map((o) => o.tokens));
    expect(tight.engine.pool.numUsed).toBe(0);
  });

  it("lets a higher-priority request displace a running one at the running limit, same tokens", async () => {
    const ref = make();
    const alone = collect(ref.engine, request(prompt(4, 7), { maxTokens: 10 }, [], 5));
    await drain(ref.engine);

    const { engine } = make({}, { maxRunning: 1 });
    const order: string[] = [];
    const lowReq = request(prompt(4, 7), { maxTokens: 10 }, [], 5);
    const low = collect(engine, lowReq);
    for (let i = 0; i < 4; i++) await engine.step(); // prefill + 3 decodes
    expect(low.tokens[0]).toHaveLength(4);
    const highReq = request(prompt(9, 5), { maxTokens: 6 }, [], 0);
    const high = collect(engine, highReq);
    for (;;) {
      if (!engine.hasWork()) break;
      await engine.step();
      if (high.final !== undefined && !order.includes("high")) order.push("high");
      if (low.final !== undefined && !order.includes("low")) order.push("low");
    }
    expect(order).toEqual(["high", "low"]);
    expect(engine.stats().preemptions).toBe(1);
    expect(high.tokens[0]).toHaveLength(6);
    expect(low.tokens).toEqual(alone.tokens);
    expect(engine.pool.numUsed).toBe(0);
  });

  it("reuses cached prefix blocks across requests and reports cached tokens", async () => {
    const { engine, model } = make();
    const p = prompt(5, 18); // 4 full blocks + 2
    const first = collect(engine, request(p));
    await drain(engine);
    const computedBefore = model.stepTokens.reduce((a, b) => a + b, 0);
    const second = collect(engine, request(p));
    await drain(engine);
    const computed = model.stepTokens.reduce((a, b) => a + b, 0) - computedBefore;
    expect(second.tokens).toEqual(first.tokens);
    expect(first.final?.usage.cachedPromptTokens).toBe(0);
    expect(second.final?.usage.cachedPromptTokens).toBe(16);
    // 2 uncached prompt tokens + 11 decode steps (12 tokens, the last needs no step).
    expect(computed).toBe(2 + 11);
    expect(engine.stats().prefixCacheHits).toBe(16);
  });

  it("keeps different images apart, encodes a repeated image once, and splits image rows across chunks", async () => {
    const ids = [1, 2, 9, 9, 9, 9, 9, 9, 9, 9, 3, 4, 5];
    const { engine, model } = make({}, { maxBatchTokens: 5 });
    const a = collect(engine, request(ids, {}, [image(1, 2, 2)]));
    const b = collect(engine, request(ids, {}, [image(2, 2, 2)]));
    await drain(engine);
    expect(a.tokens[0]).not.toEqual(b.tokens[0]);
    expect(model.encodedSlices).toBe(4);
    const c = collect(engine, request(ids, {}, [image(1, 2, 2)]));
    await drain(engine);
    expect(c.tokens).toEqual(a.tokens);
    expect(c.final?.usage.cachedPromptTokens).toBe(12);
    expect(model.encodedSlices).toBe(4);

    // The same prompt in one unchunked step gives the same tokens.
    const whole = make({}, { maxBatchTokens: 64 });
    const a2 = collect(whole.engine, request(ids, {}, [image(1, 2, 2)]));
    await drain(whole.engine);
    expect(a2.tokens).toEqual(a.tokens);
    // Chunks never exceeded the budget.
    expect(Math.max(...model.stepTokens)).toBeLessThanOrEqual(5);
  });

  it("keeps a running stream decoding between the slices of an image that arrives meanwhile", async () => {
    const imageIds = [...prompt(2, 3), ...new Array(16).fill(9), 5, 6]; // 4 slices of 4 placeholders at 3
    const run = async (slicesPerStep: number) => {
      const { engine, model } = make({}, { visionSlicesPerStep: slicesPerStep });
      const order: string[] = [];
      const encode = model.encodeSlices.bind(model);
      model.encodeSlices = async (slices) => {
        order.push(`encode ${slices.length}`);
        return encode(slices);
      };
      const streamed: number[] = [];
      engine.add(request(prompt(1, 6), { maxTokens: 30 }), (ev) => {
        if (ev.type !== "token") return;
        order.push("token");
        streamed.push(...ev.tokenIds);
      });
      await engine.step();
      await engine.step();
      expect(order).toEqual(["token", "token"]); // decoding before the image arrives
      const b = collect(engine, request(imageIds, { maxTokens: 3 }, [image(3, 3, 4)]));
      await drain(engine);
      return { order, streamed, image: b.tokens[0], encoded: model.encodedSlices };
    };
    const one = await run(1);
    // Step order: the image's 4 slices are encoded one per step, each followed by a decode step of the stream.
    const encodes = one.order.flatMap((e, i) => (e.startsWith("encode") ? [i] : []));
    expect(encodes.map((i) => one.order[i])).toEqual(["encode 1", "encode 1", "encode 1", "encode 1"]);
    for (const i of encodes) expect(one.order[i + 1]).toBe("token");
    expect(one.encoded).toBe(4);
    // Two slices per step: two encodes; outputs identical to one per step, and to each request alone.
    const two = await run(2);
    expect(two.order.filter((e) => e.startsWith("encode"))).toEqual(["encode 2", "encode 2"]);
    expect(two.image).toEqual(one.image);
    expect(two.streamed).toEqual(one.streamed);
    const alone = make();
    const a = collect(alone.engine, request(prompt(1, 6), { maxTokens: 30 }));
    const b = collect(alone.engine, request(imageIds, { maxTokens: 3 }, [image(3, 3, 4)]));
    await drain(alone.engine);
    expect(a.tokens[0]).toEqual(one.streamed);
    expect(b.tokens[0]).toEqual(one.image);
  });

  it("forks n > 1 copy-on-write; completion 0 equals n = 1 with the same seed", async () => {
    const one = make();
    const single = collect(one.engine, request(prompt(3, 6), { ...SAMPLED, maxTokens: 10 }));
    await drain(one.engine);
    const many = make();
    const r = collect(many.engine, request(prompt(3, 6), { ...SAMPLED, maxTokens: 10, n: 3 }));
    await drain(many.engine);
    expect(r.tokens).toHaveLength(3);
    expect(r.tokens[0]).toEqual(single.tokens[0]);
    expect(r.tokens[1]).not.toEqual(r.tokens[0]);
    // The prompt's partial block (6 tokens, blocks of 4) is shared, so two children must copy it.
    expect(many.model.copies).toBe(2);
    expect(r.ends.map((e) => [e.index, e.finishReason])).toEqual(
      expect.arrayContaining([
        [0, "length"],
        [1, "length"],
        [2, "length"],
      ]),
    );
    expect(r.final?.usage.completionTokens).toBe(30);
    expect(many.engine.pool.numUsed).toBe(0);
  });

  it("runs beam search to a result and frees every beam", async () => {
    const { engine } = make();
    const r = collect(engine, request(prompt(4, 7), { beamWidth: 3, repetitionPenalty: 1.2, maxTokens: 8 }));
    await drain(engine);
    expect(r.ends).toHaveLength(1);
    expect(r.tokens[0]?.length).toBeGreaterThan(0);
    expect(r.events.at(-1)?.type).toBe("final");
    expect(engine.pool.numUsed).toBe(0);
  });

  it("returns each beam's logprobs with beam search, one per returned token, same beams as without", async () => {
    const { engine } = make();
    const beam = { beamWidth: 3, n: 2, repetitionPenalty: 1.2, maxTokens: 8 };
    const plain = collect(engine, request(prompt(4, 7), beam));
    const withLp = collect(engine, request(prompt(4, 7), { ...beam, logprobs: true, topLogprobs: 2 }));
    await drain(engine);
    expect(withLp.tokens).toEqual(plain.tokens);
    for (const [i, ids] of withLp.tokens.entries()) {
      const ev = withLp.events.find((e) => e.type === "token" && e.index === i);
      const lps = ev?.type === "token" ? (ev.logprobs ?? []) : [];
      expect(lps.map((l) => l.chosen.tokenId)).toEqual(ids);
      for (const l of lps) {
        expect(l.top).toHaveLength(2);
        expect(l.chosen.logprob).toBeLessThanOrEqual((l.top[0]?.logprob as number) + 1e-6);
        expect(l.top[0]?.logprob as number).toBeGreaterThanOrEqual(l.top[1]?.logprob as number);
      }
    }
    expect(engine.pool.numUsed).toBe(0);
  });

  it("stops on stop strings, stop ids, terminators and max_tokens, respecting min_tokens", async () => {
    const { engine } = make();
    const base = collect(engine, request(prompt(6, 5), { maxTokens: 12, ignoreEos: true }));
    const eos = collect(engine, request(prompt(6, 5), { maxTokens: 12 }));
    await drain(engine);
    // The fake's terminator is 63; ignore_eos runs past it.
    const firstEos = base.tokens[0]?.indexOf(63) ?? -1;
    if (firstEos >= 0) {
      expect(eos.tokens[0]).toEqual(base.tokens[0]?.slice(0, firstEos + 1));
      expect(eos.ends[0]).toMatchObject({ finishReason: "stop", stopReason: "" });
    } else expect(eos.tokens[0]).toEqual(base.tokens[0]);
    const text = base.text[0] as string;
    expect(text).toHaveLength(12);
    const stop = text.slice(3, 5);
    const cut = text.indexOf(stop);
    const s = collect(engine, request(prompt(6, 5), { stop: [stop], ignoreEos: true }));
    const id = collect(
      engine,
      request(prompt(6, 5), { stopTokenIds: [base.tokens[0]?.[4] as number], ignoreEos: true }),
    );
    const min = collect(
      engine,
      request(prompt(6, 5), { stopTokenIds: [base.tokens[0]?.[0] as number], minTokens: 3, ignoreEos: true }),
    );
    await drain(engine);
    expect(s.text[0]).toBe(text.slice(0, cut));
    expect(s.ends[0]).toMatchObject({ finishReason: "stop", stopReason: stop });
    expect(id.tokens[0]).toEqual(base.tokens[0]?.slice(0, 5));
    expect(id.ends[0]).toMatchObject({ finishReason: "stop", stopReason: String(base.tokens[0]?.[4]) });
    expect(min.tokens[0]?.length).toBeGreaterThanOrEqual(3);
    expect(base.ends[0]).toMatchObject({ finishReason: "length" });
  });

  it("aborts a running request within one step and frees its blocks", async () => {
    const { engine } = make();
    const r = collect(engine, request(prompt(8, 9), { maxTokens: 100 }));
    await engine.step();
    await engine.step();
    expect(engine.pool.numUsed).toBeGreaterThan(0);
    engine.abort(`r${nextId - 1}`);
    expect(engine.pool.numUsed).toBe(0);
    expect(r.ends).toEqual([{ type: "choice_end", index: 0, finishReason: "abort", stopReason: "" }]);
    expect(r.events.at(-1)?.type).toBe("final");
    expect(engine.hasWork()).toBe(false);
  });

  it("applies an abort that arrives during a model step right after that step", async () => {
    const { engine, model } = make();
    let release: () => void = () => {};
    const inner = model.step.bind(model);
    model.step = async (seqs) => {
      await new Promise<void>((r) => {
        release = r;
      });
      return inner(seqs);
    };
    const r = collect(engine, request(prompt(2, 5), { maxTokens: 50 }));
    const stepping = engine.step();
    await Promise.resolve();
    engine.abort(`r${nextId - 1}`);
    expect(r.ends).toEqual([]); // deferred: the step owns the state
    release();
    await stepping;
    expect(r.tokens).toEqual([]); // no token sampled for the aborted request
    expect(r.ends.map((e) => e.finishReason)).toEqual(["abort"]);
    expect(engine.pool.numUsed).toBe(0);
  });

  it("rejects what it can never serve and refuses work beyond the waiting queue", () => {
    const { engine } = make({ contextLength: 16 }, { maxWaiting: 1 });
    expect(() => engine.add(request(prompt(1, 16)), () => {})).toThrow(
      "prompt.token_ids: 16 tokens, the context length is 16",
    );
    expect(() => engine.add(request([1, 2, 99]), () => {})).toThrow(
      "prompt.token_ids[2]: 99 is outside the vocabulary",
    );
    expect(() => engine.add(request([1, 2], { logitBias: new Map([[64, 1]]) }), () => {})).toThrow(
      "params.logit_bias: token id 64 is outside the vocabulary (0..63)",
    );
    expect(() => engine.add(request([1, 2], {}, [image(1, 1)]), () => {})).toThrow(
      "prompt.media[0].slices[0].token_offset: 1 + 4 placeholders exceeds the 2 prompt tokens",
    );
    engine.add(request([1]), () => {});
    expect(() => engine.add(request([2]), () => {})).toThrow("the waiting queue is full (1 requests)");
  });

  it("applies logit_bias: +100 forces a token, -100 bans the greedy one; logprobs stay raw", async () => {
    const { engine } = make();
    const plain = collect(engine, request(prompt(4, 5), { maxTokens: 4 }));
    await drain(engine);
    const first = plain.tokens[0]?.[0] as number;
    const forced = collect(engine, request(prompt(4, 5), { maxTokens: 4, logitBias: new Map([[17, 100]]) }));
    const banned = collect(
      engine,
      request(prompt(4, 5), { maxTokens: 1, logprobs: true, topLogprobs: 1, logitBias: new Map([[first, -100]]) }),
    );
    await drain(engine);
    expect(forced.tokens[0]).toEqual([17, 17, 17, 17]);
    expect(banned.tokens[0]?.[0]).not.toBe(first);
    const ev = banned.events.find((e) => e.type === "token");
    // The raw distribution still ranks the banned token first (vLLM's raw logprobs).
    expect(ev?.type === "token" && ev.logprobs?.[0]?.top[0]?.tokenId).toBe(first);
  });

  it("returns raw logprobs with top alternatives", async () => {
    const { engine } = make();
    const r = collect(engine, request(prompt(9, 4), { maxTokens: 2, logprobs: true, topLogprobs: 3 }));
    await drain(engine);
    const ev = r.events.find((e) => e.type === "token");
    expect(ev?.type === "token" && ev.logprobs?.[0]?.top).toHaveLength(3);
    if (ev?.type === "token") {
      const lp = ev.logprobs?.[0];
      // Greedy: the chosen token is the most likely one.
      expect(lp?.chosen.tokenId).toBe(lp?.top[0]?.tokenId);
      expect(lp?.chosen.logprob).toBeLessThan(0);
    }
  });
});
