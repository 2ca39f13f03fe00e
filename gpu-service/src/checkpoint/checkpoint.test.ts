import { mkdtempSync, readFileSync, rmSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildConfigJson,
  buildHeader,
  buildPreprocessorConfigJson,
  type Dtype,
  expectedTensors,
  loadCheckpoint,
  PRESETS,
  parseModelConfig,
  type TinyConfig,
  writeSafetensors,
} from "./index";

// A minimal architecture (hidden 128 is the smallest legal LLM width) with a 1-row vocabulary
// stand-in, so that every file here is small.
const MINI: TinyConfig = {
  name: "mini",
  seed: 1,
  llm: { hiddenSize: 128, numLayers: 1, numHeads: 4, numKvHeads: 2, intermediateSize: 32 },
  vision: { hiddenSize: 32, numLayers: 1, numHeads: 2, intermediateSize: 16 },
};

function miniConfigJson(): Record<string, unknown> {
  return {
    ...buildConfigJson(MINI),
    vocab_size: 3,
    vision_config: { ...(buildConfigJson(MINI).vision_config as object), image_size: 28 },
  };
}

const cfg = parseModelConfig(miniConfigJson(), null, { config: "config.json", preprocessor: "p.json" });
const specs = expectedTensors(cfg);

let root: string;
let n = 0;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "checkpoint-test-"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Values exactly representable in bf16 and f16: small multiples of 1/8, distinct per tensor. */
function valuesFor(index: number, count: number): Float32Array {
  const v = new Float32Array(count);
  for (let i = 0; i < count; i++) v[i] = (((i * 7 + index * 3) % 33) - 16) / 8;
  return v;
}

/** Index of the first differing element (-1 if equal); toEqual on large typed arrays is very slow. */
function firstMismatch(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Writes a checkpoint dir with the mini config; `mutate` may edit tensors and the dtype per tensor. */
async function makeDir(
  dtypeOf: (name: string, i: number) => Dtype,
  opts: { shards?: number; omit?: string; reshape?: string } = {},
): Promise<string> {
  const dir = join(root, `ck${n++}`);
  const { mkdirSync } = await import("node:fs");
  mkdirSync(dir);
  writeFileSync(join(dir, "config.json"), JSON.stringify(miniConfigJson()));
  writeFileSync(join(dir, "preprocessor_config.json"), JSON.stringify(buildPreprocessorConfigJson()));
  const tensors = specs
    .filter((s) => s.name !== opts.omit)
    .map((s, i) => {
      const shape = s.name === opts.reshape ? [...s.shape, 1].map((d, j) => (j === 0 ? d * 2 : d)) : s.shape;
      return { name: s.name, dtype: dtypeOf(s.name, i), shape, data: valuesFor(i, numel(shape)) };
    });
  const shards = opts.shards ?? 1;
  if (shards === 1) {
    await writeSafetensors(join(dir, "model.safetensors"), tensors);
  } else {
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < shards; s++) {
      const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
      const part = tensors.filter((_, i) => i % shards === s);
      for (const t of part) weightMap[t.name] = file;
      await writeSafetensors(join(dir, file), part);
    }
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
  return dir;
}

describe("loadCheckpoint round trip", () => {
  for (const dtype of ["BF16", "F16", "F32"] as const) {
    it(`reads ${dtype} tensors back exactly`, async () => {
      const dir = await makeDir(() => dtype);
      const ck = await loadCheckpoint(dir);
      try {
        expect(ck.tensorNames()).toEqual(specs.map((s) => s.name));
        for (const [i, s] of specs.entries()) {
          expect(ck.tensorInfo(s.name)).toEqual({ dtype, shape: s.shape });
          expect(firstMismatch(await ck.readTensor(s.name), valuesFor(i, numel(s.shape))), s.name).toBe(-1);
        }
        expect(ck.config.llm.hiddenSize).toBe(128);
        expect(ck.config.resampler).toEqual({ embedDim: 128, numHeads: 1, kvDim: 32 });
        expect(ck.contentHash).toMatch(/^[0-9a-f]{64}$/);
      } finally {
        await ck.close();
      }
    });
  }

  it("rounds F16 and BF16 half to even on write", async () => {
    const dir = join(root, "rounding");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(dir);
    const path = join(dir, "x.safetensors");
    const v = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 1 + 2 ** -8, 1 + 3 * 2 ** -8]);
    await writeSafetensors(path, [
      { name: "h", dtype: "F16", shape: [5], data: v },
      { name: "b", dtype: "BF16", shape: [5], data: v },
    ]);
    const bytes = readFileSync(path);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const b = [
      ...new Uint16Array(bytes.buffer.slice(bytes.byteOffset + 8 + headerLen, bytes.byteOffset + bytes.length)),
    ];
    // sorted names: "b" (BF16) first, then "h" (F16)
    expect(b.slice(0, 5)).toEqual([0x3f80, 0x3f80, 0x4780, 0x3f80, 0x3f82]);
    expect(b.slice(5)).toEqual([0x3c00, 0x3c02, 0x7c00, 0x3c04, 0x3c0c]);
  });

  it("mixes dtypes and reads sharded checkpoints through the index", async () => {
    const dtypes: Dtype[] = ["BF16", "F16", "F32"];
    const dir = await makeDir((_, i) => dtypes[i % 3] as Dtype, { shards: 3 });
    const ck = await loadCheckpoint(dir);
    try {
      for (const [i, s] of specs.entries()) {
        expect(ck.tensorInfo(s.name).dtype).toBe(dtypes[i % 3]);
        expect(firstMismatch(await ck.readTensor(s.name), valuesFor(i, numel(s.shape))), s.name).toBe(-1);
      }
    } finally {
      await ck.close();
    }
    await expect(ck.readTensor(specs[0]?.name as string)).rejects.toThrow("checkpoint is closed");
  });

  it("content hash covers config and every weight byte; the digest memo skips unchanged files only", async () => {
    const a = await makeDir(() => "BF16");
    const b = await makeDir(() => "BF16");
    const c = await makeDir(() => "F32");
    const hash = async (d: string, hashMemo?: string) => {
      const ck = await loadCheckpoint(d, hashMemo ? { hashMemo } : {});
      await ck.close();
      return ck.contentHash;
    };
    expect(await hash(a)).toBe(await hash(b));
    expect(await hash(a)).not.toBe(await hash(c));
    // Same config and header, one weight byte different (another seed or a fine-tune): another key.
    const file = join(b, "model.safetensors");
    const bytes = readFileSync(file);
    const last = bytes.length - 1;
    bytes[last] = (bytes[last] as number) ^ 1;
    writeFileSync(file, bytes);
    expect(await hash(b)).not.toBe(await hash(a));
    // The memo answers for an unchanged file and is bypassed once the file is rewritten.
    const memo = join(b, "digests.json");
    const before = await hash(b, memo);
    expect(Object.keys(JSON.parse(readFileSync(memo, "utf8")))).toHaveLength(1);
    expect(await hash(b, memo)).toBe(before);
    bytes[last] = (bytes[last] as number) ^ 1;
    writeFileSync(file, bytes);
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    expect(await hash(b, memo)).toBe(await hash(a));
  });
});

describe("loadCheckpoint rejects corrupt checkpoints", () => {
  let good: string;
  let goodBytes: Buffer;
  let headerLen: number;
  const first = "llm.lm_head.weight"; // first tensor in sorted order, so its data starts the data section

  beforeAll(async () => {
    good = await makeDir(() => "BF16");
    goodBytes = readFileSync(join(good, "model.safetensors"));
    headerLen = Number(goodBytes.readBigUInt64LE(0));
  });

  async function withFile(bytes: Buffer | Uint8Array): Promise<string> {
    const dir = await makeDir(() => "BF16");
    writeFileSync(join(dir, "model.safetensors"), bytes);
    return dir;
  }

  function withHeader(edit: (h: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void) {
    const h = JSON.parse(goodBytes.subarray(8, 8 + headerLen).toString("utf8"));
    edit(h);
    const json = Buffer.from(JSON.stringify(h));
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([prefix, json, goodBytes.subarray(8 + headerLen)]);
  }

  it("truncated file names the file and the tensor", async () => {
    const dir = await makeDir(() => "BF16");
    const path = join(dir, "model.safetensors");
    truncateSync(path, goodBytes.length - 10);
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      new RegExp(
        `${path}: tensor vpm\\.post_layernorm\\.weight: data ends at byte \\d+ but the file has only ${goodBytes.length - 10} bytes`,
      ),
    );
  });

  it("header length past the end of the file", async () => {
    const bytes = Buffer.from(goodBytes);
    bytes.writeBigUInt64LE(BigInt(goodBytes.length));
    const dir = await withFile(bytes);
    await expect(loadCheckpoint(dir)).rejects.toThrow(`model.safetensors: header length ${goodBytes.length} runs past`);
  });

  it("absurd header length", async () => {
    const bytes = Buffer.from(goodBytes);
    bytes.writeBigUInt64LE(2n ** 62n);
    await expect(loadCheckpoint(await withFile(bytes))).rejects.toThrow("exceeds the limit of 100000000 bytes");
  });

  it("file shorter than the length prefix", async () => {
    await expect(loadCheckpoint(await withFile(Buffer.from([1, 2, 3])))).rejects.toThrow(
      "model.safetensors: file is 3 bytes, too short",
    );
  });

  it("header JSON garbage", async () => {
    const bytes = Buffer.from(goodBytes);
    bytes.write("{not json", 8);
    await expect(loadCheckpoint(await withFile(bytes))).rejects.toThrow("model.safetensors: header is not valid JSON");
  });

  it("offsets outside the file", async () => {
    const dataLen = goodBytes.length - 8 - headerLen;
    const bytes = withHeader((h) => {
      const e = h[first] as { data_offsets: number[] };
      e.data_offsets = [dataLen, dataLen + ((e.data_offsets[1] as number) - (e.data_offsets[0] as number))];
    });
    await expect(loadCheckpoint(await withFile(bytes))).rejects.toThrow(`tensor ${first}: data ends at byte`);
  });

  it("offsets that do not match the shape", async () => {
    const bytes = withHeader((h) => {
      (h[first] as { data_offsets: number[] }).data_offsets[1] = 6;
    });
    await expect(loadCheckpoint(await withFile(bytes))).rejects.toThrow(
      `tensor ${first}: data_offsets [0, 6] hold 6 bytes, shape needs 768`,
    );
  });

  it("overlapping tensors", async () => {
    const bytes = withHeader((h) => {
      const a = h["llm.lm_head.weight"] as { data_offsets: number[] };
      const b = h["llm.model.embed_tokens.weight"] as { data_offsets: number[] };
      b.data_offsets = [...a.data_offsets];
    });
    await expect(loadCheckpoint(await withFile(bytes))).rejects.toThrow("overlap");
  });

  it("missing tensor", async () => {
    const dir = await makeDir(() => "BF16", { omit: "vpm.post_layernorm.bias" });
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      `${join(dir, "model.safetensors")}: tensor vpm.post_layernorm.bias is missing`,
    );
  });

  it("wrong shape", async () => {
    const dir = await makeDir(() => "BF16", { reshape: "resampler.proj" });
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      "tensor resampler.proj has shape [256,128,1] but the config needs [128,128]",
    );
  });

  it("unsupported dtype", async () => {
    const bytes = withHeader((h) => {
      const e = h["llm.model.norm.weight"] as { dtype: string; shape: number[]; data_offsets: number[] };
      e.dtype = "I16";
    });
    await expect(loadCheckpoint(await withFile(bytes))).rejects.toThrow(
      "tensor llm.model.norm.weight has unsupported dtype I16 (BF16, F16 or F32)",
    );
  });

  it("shard index naming a tensor that is not in its shard", async () => {
    const dir = await makeDir(() => "BF16", { shards: 2 });
    const indexPath = join(dir, "model.safetensors.index.json");
    const index = JSON.parse(readFileSync(indexPath, "utf8"));
    index.weight_map["llm.model.norm.weight"] =
      index.weight_map["llm.model.norm.weight"] === "model-00001-of-00002.safetensors"
        ? "model-00002-of-00002.safetensors"
        : "model-00001-of-00002.safetensors";
    writeFileSync(indexPath, JSON.stringify(index));
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      /model-0000\d-of-00002\.safetensors: tensor llm\.model\.norm\.weight is missing/,
    );
    delete index.weight_map["llm.model.norm.weight"];
    writeFileSync(indexPath, JSON.stringify(index));
    await expect(loadCheckpoint(dir)).rejects.toThrow("tensor llm.model.norm.weight is missing from weight_map");
  });

  it("missing config key and disagreeing preprocessor config", async () => {
    const dir = await makeDir(() => "BF16");
    const c = miniConfigJson();
    delete c.num_key_value_heads;
    delete c.intermediate_size;
    writeFileSync(join(dir, "config.json"), JSON.stringify(c));
    await expect(loadCheckpoint(dir)).rejects.toThrow(
      `${join(dir, "config.json")}: missing required key intermediate_size`,
    );
    writeFileSync(join(dir, "config.json"), JSON.stringify(miniConfigJson()));
    writeFileSync(
      join(dir, "preprocessor_config.json"),
      JSON.stringify({ ...buildPreprocessorConfigJson(), max_slice_nums: 4 }),
    );
    await expect(loadCheckpoint(dir)).rejects.toThrow("preprocessor_config.json: max_slice_nums is 4 but");
  });

  it("no weights at all", async () => {
    const dir = await makeDir(() => "BF16");
    rmSync(join(dir, "model.safetensors"));
    await expect(loadCheckpoint(dir)).rejects.toThrow(`${join(dir, "model.safetensors")}: cannot open`);
  });
});

describe("expectedTensors", () => {
  it("lists the real MiniCPM-V 2.6 shapes", () => {
    const full = parseModelConfig(buildConfigJson(PRESETS["minicpmv-2_6"]), buildPreprocessorConfigJson(), {
      config: "config.json",
      preprocessor: "preprocessor_config.json",
    });
    const t = new Map(expectedTensors(full).map((x) => [x.name, x.shape]));
    expect(t.size).toBe(1 + 28 * 12 + 2 + 3 + 27 * 16 + 2 + 13);
    expect(t.get("llm.model.embed_tokens.weight")).toEqual([151666, 3584]);
    expect(t.get("llm.model.layers.27.self_attn.k_proj.weight")).toEqual([512, 3584]);
    expect(t.get("vpm.embeddings.patch_embedding.weight")).toEqual([1152, 3, 14, 14]);
    expect(t.get("vpm.embeddings.position_embedding.weight")).toEqual([4900, 1152]);
    expect(t.get("vpm.encoder.layers.26.mlp.fc1.weight")).toEqual([4304, 1152]);
    expect(t.get("resampler.attn.in_proj_weight")).toEqual([10752, 3584]);
    expect(t.get("resampler.kv_proj.weight")).toEqual([3584, 1152]);
    expect(full.resampler.numHeads).toBe(28);
    const params = [...t.values()].reduce((n, s) => n + numel(s), 0);
    expect(params).toBe(8_099_175_152);
  });

  it("header layout is the reference writer's", () => {
    const { bytes } = buildHeader([
      { name: "b", dtype: "F32", shape: [1] },
      { name: "a", dtype: "BF16", shape: [2, 1] },
    ]);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    expect(Buffer.from(bytes.subarray(8)).toString()).toBe(
      '{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}   ',
    );
  });
});
