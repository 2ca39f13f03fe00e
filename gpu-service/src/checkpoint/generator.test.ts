import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Checkpoint,
  ensureTinyCheckpoint,
  fnv1a32,
  generateTensorBf16,
  loadCheckpoint,
  PRESETS,
  uniformAt,
  validateTinyConfig,
  valueRule,
} from "./index";

const GOLDEN = join(import.meta.dirname, "../../../../shared/golden/tiny-a");
/** sha256 of the tiny-a model.safetensors this project writes (equal to the reference writer's file). */
const TINY_A_SAFETENSORS_SHA256 = "b0326cd8183deb9b5f49991d550d5e09bfbc2344608afdbc4795c77615669f07";

interface GoldenTensor {
  name: string;
  shape: number[];
  rule: number;
  sha256_bf16_le: string;
  first4: number[];
}

const golden = JSON.parse(readFileSync(join(GOLDEN, "tensors.json"), "utf8")) as {
  seed: number;
  num_tensors: number;
  tensors: GoldenTensor[];
};

let cache: string;
let dir: string;
let ck: Checkpoint;

beforeAll(async () => {
  cache = mkdtempSync(join(tmpdir(), "tiny-cache-"));
  // Two concurrent callers share one generation.
  const [a, b] = await Promise.all([ensureTinyCheckpoint(cache), ensureTinyCheckpoint(cache)]);
  expect(a).toBe(b);
  dir = a;
  ck = await loadCheckpoint(dir);
}, 120_000);

afterAll(async () => {
  await ck?.close();
  rmSync(cache, { recursive: true, force: true });
});

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("tiny-a generator", () => {
  it("writes the checkpoint atomically into <cache>/checkpoints/tiny-a", () => {
    expect(dir).toBe(join(cache, "checkpoints", "tiny-a"));
    expect(readdirSync(join(cache, "checkpoints"))).toEqual(["tiny-a"]);
    expect(readdirSync(dir).sort()).toEqual([
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "preprocessor_config.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
  });

  it("is deterministic: fixed file hash", () => {
    expect(sha256(readFileSync(join(dir, "model.safetensors")))).toBe(TINY_A_SAFETENSORS_SHA256);
  });

  it("every tensor matches golden tensors.json", async () => {
    expect(ck.tensorNames()).toHaveLength(golden.num_tensors);
    expect(ck.tensorNames().sort()).toEqual(golden.tensors.map((t) => t.name).sort());
    for (const t of golden.tensors) {
      expect(ck.tensorInfo(t.name), t.name).toEqual({ dtype: "BF16", shape: t.shape });
      expect(sha256(await ck.readTensorBytes(t.name)), t.name).toBe(t.sha256_bf16_le);
      expect(valueRule(t.name, t.shape, 128).rule, t.name).toBe(t.rule);
    }
    const embed = await ck.readTensor("llm.model.embed_tokens.weight");
    expect([...embed.subarray(0, 4)]).toEqual(golden.tensors[0]?.first4);
  });

  it("config files equal the golden ones", () => {
    for (const f of ["config.json", "preprocessor_config.json", "generation_config.json", "tokenizer_config.json"]) {
      const mine = JSON.parse(readFileSync(join(dir, f), "utf8"));
      expect(mine, f).toEqual(JSON.parse(readFileSync(join(GOLDEN, "checkpoint", f), "utf8")));
    }
  });

  it("parses to the tiny-a ModelConfig", () => {
    expect(ck.config).toEqual({
      llm: {
        hiddenSize: 128,
        numLayers: 2,
        numHeads: 4,
        numKvHeads: 2,
        headDim: 32,
        intermediateSize: 256,
        vocabSize: 151666,
        rmsNormEps: 1e-6,
        ropeTheta: 1e6,
        maxPositionEmbeddings: 32768,
        tieWordEmbeddings: false,
      },
      vision: {
        hiddenSize: 64,
        numLayers: 2,
        numHeads: 2,
        headDim: 32,
        intermediateSize: 128,
        patchSize: 14,
        imageSize: 980,
        layerNormEps: 1e-6,
      },
      resampler: { embedDim: 128, numHeads: 1, kvDim: 64 },
      queryNum: 64,
      scaleResolution: 448,
      maxSliceNums: 9,
      useImageId: true,
      bosTokenId: 151643,
      eosTokenId: 151645,
      modelName: "tiny-a",
    });
  });

  it("a second call reuses the cached checkpoint", async () => {
    expect(await ensureTinyCheckpoint(cache)).toBe(dir);
  });
});

describe("generator primitives", () => {
  it("fnv1a32 and mulberry32 counter", () => {
    expect(fnv1a32("")).toBe(0x811c9dc5);
    expect(fnv1a32("a")).toBe(0xe40c292c);
    const u = uniformAt(0, 0);
    expect(u).toBeGreaterThanOrEqual(0);
    expect(u).toBeLessThan(1);
    // element i is independent of the others
    expect(generateTensorBf16("resampler.query", [4], 7, 128)[3]).toBe(
      generateTensorBf16("resampler.query", [9], 7, 128)[3],
    );
  });

  it("the seed changes every value", () => {
    const a = generateTensorBf16("resampler.query", [64, 128], golden.seed, 128);
    const b = generateTensorBf16("resampler.query", [64, 128], golden.seed + 1, 128);
    const g = golden.tensors.find((t) => t.name === "resampler.query") as GoldenTensor;
    expect(sha256(new Uint8Array(a.buffer))).toBe(g.sha256_bf16_le);
    expect(sha256(new Uint8Array(b.buffer))).not.toBe(g.sha256_bf16_le);
  });

  it("validates custom sizes", () => {
    const c = structuredClone(PRESETS["tiny-a"]) as unknown as Parameters<typeof validateTinyConfig>[0];
    expect(() => validateTinyConfig({ ...c, llm: { ...c.llm, hiddenSize: 192 } })).toThrow(
      "llm.hiddenSize must be a multiple of 128",
    );
    expect(() => validateTinyConfig({ ...c, llm: { ...c.llm, numHeads: 16 } })).toThrow(
      "llm head size 8 must be a multiple of 16",
    );
    expect(() => validateTinyConfig({ ...c, llm: { ...c.llm, numKvHeads: 3 } })).toThrow(
      "multiple of llm.numKvHeads 3",
    );
    expect(() => validateTinyConfig({ ...c, vision: { ...c.vision, numLayers: 0 } })).toThrow(
      "vision.numLayers must be a positive integer, got 0",
    );
    expect(() => validateTinyConfig(PRESETS["qwen2-0.5b"])).not.toThrow();
    expect(() => validateTinyConfig(PRESETS["minicpmv-2_6"])).not.toThrow();
  });
});
