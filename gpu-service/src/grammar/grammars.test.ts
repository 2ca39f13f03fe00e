import { describe, expect, it } from "vitest";
import { LocalEngine } from "../engine/engine-handle";
import { FakeModel } from "../engine/fake-model.test-support";
import { greedyParams } from "../engine/sampler";
import type { EngineEvent, EngineRequest, SamplingParams, StructuredSpec } from "../engine/types";
import { Grammars } from "./grammars";
import { applyTokenMask } from "./token-mask";

// A byte vocabulary: ids 0..127 are the ASCII bytes, 128..255 and 257.. special (unused), 256 the terminator.
// The fake model's logits are hash noise, so only the grammar makes the output valid. (Multi-byte UTF-8 is
// covered by the real tokenizer in test/structured-stack.test.ts.)
const EOS = 256;
const VOCAB = 264;
const byteVocab = {
  vocabSize: VOCAB,
  tokenBytes: (id: number) => (id < 256 ? Uint8Array.of(id) : new TextEncoder().encode(`<s${id}>`)),
  isSpecial: (id: number) => id >= 128,
  terminators: [EOS],
};

function engine(grammars: Grammars) {
  return new LocalEngine(
    new FakeModel({ vocabSize: VOCAB, numBlocks: 512, contextLength: 1024 }),
    byteVocab,
    {
      maxBatchTokens: 256,
      maxRunning: 32,
      maxWaiting: 64,
      encoderCacheBytes: 1 << 20,
      enablePrefixCaching: true,
      terminators: [EOS],
    },
    grammars,
  );
}

let ids = 0;
async function run(
  e: LocalEngine,
  structured: StructuredSpec,
  params: Partial<SamplingParams> = {},
  signal?: AbortSignal,
): Promise<{ texts: string[]; reasons: string[]; error?: string }> {
  const req: EngineRequest = {
    id: `g${ids++}`,
    prompt: { tokenIds: [1, 2, 3, ids % 200], media: [], counts: { text: 4, image: 0, video: 0, total: 4 } },
    params: { ...greedyParams(200), temperature: 1, topP: 1, topK: 0, seed: BigInt(ids), structured, ...params },
    priority: 0,
  };
  const texts: string[] = [];
  const reasons: string[] = [];
  for await (const ev of e.generate(req, signal) as AsyncIterable<EngineEvent>) {
    if (ev.type === "token") texts[ev.index] = (texts[ev.index] ?? "") + ev.text;
    else if (ev.type === "choice_end") reasons[ev.index] = ev.finishReason;
    else if (ev.type === "error") return { texts, reasons, error: ev.message };
  }
  return { texts, reasons };
}

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 6 },
    age: { type: "integer", minimum: 0, maximum: 99 },
    pet: { enum: ["cat", "dog", null] },
    tags: { type: "array", items: { type: "boolean" }, maxItems: 3 },
  },
  required: ["name", "age", "pet", "tags"],
  additionalProperties: false,
};

describe("Grammars with the engine (random logits)", () => {
  const grammars = new Grammars(byteVocab);
  const e = engine(grammars);

  it("every JSON Schema answer parses and satisfies the schema, for 12 seeds with n=2", async () => {
    for (let k = 0; k < 12; k++) {
      const r = await run(e, { kind: "json_schema", schema: JSON.stringify(PERSON) }, { n: 2 });
      expect(r.error).toBeUndefined();
      for (const [i, t] of r.texts.entries()) {
        expect(r.reasons[i]).toBe("stop");
        const v = JSON.parse(t) as Record<string, unknown>;
        expect(Object.keys(v).sort()).toEqual(["age", "name", "pet", "tags"]);
        expect(typeof v.name === "string" && [...v.name].length <= 6).toBe(true); // code points, as JSON Schema counts
        expect(Number.isInteger(v.age) && (v.age as number) >= 0 && (v.age as number) <= 99).toBe(true);
        expect(["cat", "dog", null]).toContain(v.pet);
        expect(Array.isArray(v.tags) && (v.tags as unknown[]).every((b) => typeof b === "boolean")).toBe(true);
      }
    }
  });

  it("json_object, regex, choice and EBNF answers match, for 10 seeds each", async () => {
    for (let k = 0; k < 10; k++) {
      const obj = await run(e, { kind: "json_object" }, { maxTokens: 400 });
      if (obj.reasons[0] === "stop") expect(typeof JSON.parse(obj.texts[0] as string)).toBe("object");
      else expect(obj.reasons[0]).toBe("length");
      const re = await run(e, { kind: "regex", pattern: "[A-Z]{2}-[0-9]{3,4}" });
      expect(re.texts[0]).toMatch(/^[A-Z]{2}-[0-9]{3,4}$/);
      const ch = await run(e, { kind: "choice", choices: ["positive", "negative", "neutral"] }, { n: 3 });
      for (const t of ch.texts) expect(["positive", "negative", "neutral"]).toContain(t);
      const g = await run(e, { kind: "grammar", ebnf: 'root ::= "(" [0-9]+ ("+" [0-9]+)* ")"' }, { maxTokens: 400 });
      if (g.reasons[0] === "stop") expect(g.texts[0]).toMatch(/^\([0-9]+(\+[0-9]+)*\)$/);
    }
  });

  it("a stop string still ends a constrained answer, and logprobs are of allowed tokens", async () => {
    const r = await run(e, { kind: "regex", pattern: "ab(c|d)xyz" }, { stop: ["x"], logprobs: true, topLogprobs: 3 });
    expect(r.texts[0]).toMatch(/^ab[cd]$/);
    expect(r.reasons[0]).toBe("stop");
  });

  it("a schema xgrammar cannot compile is an invalid_argument naming the field and the reason", async () => {
    const bad = JSON.stringify({ type: "object", properties: { a: { $ref: "#/definitions/missing" } } });
    const r = await run(e, { kind: "json_schema", schema: bad });
    expect(r.error).toMatch(/^params\.structured\.json_schema: cannot compile: .*missing/);
    const g = await run(e, { kind: "grammar", ebnf: "root ::= undefined_rule" });
    expect(g.error).toMatch(/^params\.structured\.grammar: cannot compile: .*undefined_rule/);
    // xgrammar keeps working after a failed compile.
    const ok = await run(e, { kind: "choice", choices: ["yes"] });
    expect(ok.texts[0]).toBe("yes");
  });

  it("compiles each spec once, and frees every matcher on finish and on abort", async () => {
    const before = grammars.stats();
    const spec: StructuredSpec = { kind: "regex", pattern: "[a-z]{1,3}" };
    await run(e, spec);
    await run(e, spec, { n: 4 });
    const after = grammars.stats();
    expect(after.compiles - before.compiles).toBe(1);
    expect(after.cacheHits - before.cacheHits).toBe(1);
    const ac = new AbortController();
    const long = run(e, { kind: "regex", pattern: "[a-z]{500}" }, { n: 3, maxTokens: 600 }, ac.signal);
    setTimeout(() => ac.abort(), 5);
    const r = await long;
    expect(r.reasons).toEqual(["abort", "abort", "abort"]);
    expect(grammars.stats().liveMatchers).toBe(0);
  });

  it("beam search with a grammar is refused", async () => {
    const r = await run(e, { kind: "json_object" }, { beamWidth: 3, temperature: 0 });
    expect(r.error).toMatch(/beam/);
  });
});

describe("applyTokenMask", () => {
  it("sets forbidden ids (and ids past the mask) to -Infinity and leaves allowed ones", () => {
    const logits = Float32Array.from({ length: 70 }, (_, i) => i);
    const mask = new Int32Array([0b101, -1]); // ids 0 and 2, then 32..63
    applyTokenMask(logits, mask);
    const allowed = [...logits.keys()].filter((i) => Number.isFinite(logits[i]));
    expect(allowed).toEqual([0, 2, ...Array.from({ length: 32 }, (_, k) => 32 + k)]);
    expect(logits[2]).toBe(2);
  });
});

describe("tool-call structural tags", () => {
  const grammars = new Grammars(byteVocab);
  const e = engine(grammars);
  it("forces <tool_call> blocks whose arguments satisfy the function's schema", async () => {
    const params = {
      type: "object",
      properties: { city: { type: "string", maxLength: 5 }, days: { type: "integer", minimum: 1, maximum: 7 } },
      required: ["city", "days"],
    };
    const tag = JSON.stringify({
      type: "structural_tag",
      format: {
        type: "tags_with_separator",
        separator: "\n",
        at_least_one: true,
        stop_after_first: false,
        tags: [
          {
            type: "tag",
            begin: '<tool_call>\n{"name": "forecast", "arguments": ',
            content: { type: "json_schema", json_schema: params },
            end: "}\n</tool_call>",
          },
        ],
      },
    });
    for (let k = 0; k < 8; k++) {
      const r = await run(e, { kind: "structural_tag", tag }, { maxTokens: 400 });
      expect(r.error).toBeUndefined();
      if (r.reasons[0] !== "stop") continue;
      const blocks = [...(r.texts[0] as string).matchAll(/<tool_call>\n(.*?)\n<\/tool_call>/gs)];
      expect(blocks.length).toBeGreaterThan(0);
      for (const b of blocks) {
        const call = JSON.parse(b[1] as string) as { name: string; arguments: { city: string; days: number } };
        expect(call.name).toBe("forecast");
        expect([...call.arguments.city].length).toBeLessThanOrEqual(5);
        expect(call.arguments.days >= 1 && call.arguments.days <= 7).toBe(true);
      }
    }
  });
});
