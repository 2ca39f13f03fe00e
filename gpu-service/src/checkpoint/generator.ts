/**
 * Deterministic checkpoints of the MiniCPM-V 2.6 architecture (TINY_MODEL.md): counter-based
 * mulberry32 values, per-tensor value rules, bfloat16 round-half-even, streamed to disk tensor by
 * tensor in chunks so that even the full 8B shape never sits in memory.
 */

import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { buildTokenizerFiles } from "@minicpmv/preprocess/tokenizer";
import { expectedTensors, type TensorShape } from "./expected-tensors";
import { parseModelConfig } from "./model-config";
import { SafetensorsWriter } from "./safetensors";
import {
  buildConfigJson,
  buildGenerationConfigJson,
  buildPreprocessorConfigJson,
  isPresetName,
  PRESETS,
  type PresetName,
  type TinyConfig,
  validateTinyConfig,
} from "./tiny-config";

/** Elements generated per write (2 MiB of bf16). */
const CHUNK_ELEMENTS = 1 << 20;

/** FNV-1a 32-bit hash of the UTF-8 bytes of `s`. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193);
  return h >>> 0;
}

/** `tensorSeed(name, seed)` of TINY_MODEL.md §2. */
export function tensorSeed(name: string, seed: number): number {
  return (fnv1a32(name) ^ seed) >>> 0;
}

/** `uniform(name, seed, i)` of TINY_MODEL.md §2, from a precomputed tensor seed: a float64 in [0, 1). */
export function uniformAt(tseed: number, i: number): number {
  let t = (tseed + Math.imul(i + 1, 0x6d2b79f5)) | 0;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const NORM_SUFFIXES = [
  "norm.weight",
  "norm1.weight",
  "norm2.weight",
  "layer_norm1.weight",
  "layer_norm2.weight",
  "post_layernorm.weight",
  "ln_q.weight",
  "ln_kv.weight",
  "ln_post.weight",
];

/** The value rule of TINY_MODEL.md §3 for one tensor: value = c + a * r, r uniform in [-1, 1). */
export function valueRule(
  name: string,
  shape: readonly number[],
  hiddenSize: number,
): { rule: number; c: number; a: number } {
  if (NORM_SUFFIXES.some((s) => name.endsWith(s))) return { rule: 1, c: 1, a: 0.1 };
  if (name.endsWith("bias")) return { rule: 2, c: 0, a: 0.02 };
  if (name === "llm.model.embed_tokens.weight") return { rule: 3, c: 0, a: 1.0 };
  if (name === "llm.lm_head.weight") return { rule: 4, c: 0, a: (4 * Math.sqrt(3)) / Math.sqrt(hiddenSize) };
  if (name === "resampler.query") return { rule: 5, c: 0, a: 0.5 };
  if (name === "vpm.embeddings.position_embedding.weight") return { rule: 6, c: 0, a: 0.5 };
  // resampler.proj is used as x @ proj (un-transposed), so its fan-in is its first dim.
  const fanIn = name === "resampler.proj" ? (shape[0] as number) : shape.slice(1).reduce((x, y) => x * y, 1);
  return { rule: 7, c: 0, a: Math.sqrt(3) / Math.sqrt(fanIn) };
}

/**
 * Fills `out` with the bf16 bits of elements [first, first + out.length) of a tensor.
 * `scratch` is a float32 buffer at least as long as `out`.
 */
export function fillBf16(
  out: Uint16Array,
  tseed: number,
  first: number,
  c: number,
  a: number,
  scratch: Float32Array,
): void {
  const n = out.length;
  for (let k = 0; k < n; k++) {
    // inlined uniformAt(): this loop produces every weight of the 8B preset
    let t = (tseed + Math.imul(first + k + 1, 0x6d2b79f5)) | 0;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    scratch[k] = c + a * (2 * u - 1); // float64 -> float32 on store
  }
  const bits = new Uint32Array(scratch.buffer, scratch.byteOffset, n);
  for (let k = 0; k < n; k++) {
    const b = bits[k] as number;
    // float32 -> bfloat16, round half to even (values are finite)
    out[k] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
}

/** Generates one whole tensor as bf16 bits (tests and small tensors; the writer streams instead). */
export function generateTensorBf16(
  name: string,
  shape: readonly number[],
  seed: number,
  hiddenSize: number,
): Uint16Array {
  const n = shape.reduce((x, y) => x * y, 1);
  const { c, a } = valueRule(name, shape, hiddenSize);
  const out = new Uint16Array(n);
  fillBf16(out, tensorSeed(name, seed), 0, c, a, new Float32Array(n));
  return out;
}

/** Resolves a preset name or a custom config. */
export function resolveTinyConfig(config: TinyConfig | PresetName | string): TinyConfig {
  if (typeof config === "string") {
    if (!isPresetName(config)) throw new Error(`unknown preset ${config}; known: ${Object.keys(PRESETS).join(", ")}`);
    return PRESETS[config];
  }
  return config;
}

/** The tensors a generated checkpoint holds, in module order. */
export function tinyTensors(config: TinyConfig): TensorShape[] {
  const cfg = parseModelConfig(buildConfigJson(config), buildPreprocessorConfigJson(), {
    config: "config.json",
    preprocessor: "preprocessor_config.json",
  });
  return expectedTensors(cfg);
}

/**
 * Writes a complete checkpoint directory (TINY_MODEL.md §1): config.json, model.safetensors (BF16),
 * preprocessor_config.json, generation_config.json, tokenizer.json, tokenizer_config.json.
 * Same config and seed give the same bytes.
 */
export async function generateCheckpoint(opts: {
  config: TinyConfig | PresetName;
  seed?: number;
  outDir: string;
}): Promise<void> {
  const base = resolveTinyConfig(opts.config);
  const config: TinyConfig = opts.seed === undefined ? base : { ...base, seed: opts.seed };
  validateTinyConfig(config);
  const tensors = tinyTensors(config);
  await mkdir(opts.outDir, { recursive: true });

  const writer = await SafetensorsWriter.create(
    join(opts.outDir, "model.safetensors"),
    tensors.map((t) => ({ name: t.name, dtype: "BF16" as const, shape: t.shape })),
  );
  try {
    const out = new Uint16Array(CHUNK_ELEMENTS);
    const scratch = new Float32Array(CHUNK_ELEMENTS);
    for (const spec of writer.order) {
      const n = spec.shape.reduce((x, y) => x * y, 1);
      const { c, a } = valueRule(spec.name, spec.shape, config.llm.hiddenSize);
      const tseed = tensorSeed(spec.name, config.seed);
      for (let first = 0; first < n; first += CHUNK_ELEMENTS) {
        const len = Math.min(CHUNK_ELEMENTS, n - first);
        const view = out.subarray(0, len);
        fillBf16(view, tseed, first, c, a, scratch);
        await writer.write(new Uint8Array(view.buffer, 0, len * 2));
      }
    }
  } catch (err) {
    await writer.abort();
    throw err;
  }
  await writer.close();

  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  const tok = buildTokenizerFiles();
  await writeFile(join(opts.outDir, "config.json"), json(buildConfigJson(config)));
  await writeFile(join(opts.outDir, "preprocessor_config.json"), json(buildPreprocessorConfigJson()));
  await writeFile(join(opts.outDir, "generation_config.json"), json(buildGenerationConfigJson()));
  await writeFile(join(opts.outDir, "tokenizer.json"), JSON.stringify(tok.tokenizerJson));
  await writeFile(join(opts.outDir, "tokenizer_config.json"), json(tok.tokenizerConfig));
}
