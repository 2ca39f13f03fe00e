/**
 * Test fixtures: random in-memory weights for any model shape (tests and benchmarks only).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TensorMap } from "./reference-forward";
import type { ModelShape, WeightSource } from "./weights";

/** Every checkpoint tensor (MINICPMV26.md §1.3) with its shape, for a given model shape. */
export function tensorShapes(cfg: ModelShape): Map<string, number[]> {
  const s = new Map<string, number[]>();
  const c = cfg.llm;
  const hid = c.hiddenSize;
  s.set("llm.model.embed_tokens.weight", [c.vocabSize, hid]);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `llm.model.layers.${i}`;
    s.set(`${p}.self_attn.q_proj.weight`, [c.numHeads * c.headDim, hid]);
    s.set(`${p}.self_attn.q_proj.bias`, [c.numHeads * c.headDim]);
    for (const kv of ["k", "v"]) {
      s.set(`${p}.self_attn.${kv}_proj.weight`, [c.numKvHeads * c.headDim, hid]);
      s.set(`${p}.self_attn.${kv}_proj.bias`, [c.numKvHeads * c.headDim]);
    }
    s.set(`${p}.self_attn.o_proj.weight`, [hid, c.numHeads * c.headDim]);
    s.set(`${p}.mlp.gate_proj.weight`, [c.intermediateSize, hid]);
    s.set(`${p}.mlp.up_proj.weight`, [c.intermediateSize, hid]);
    s.set(`${p}.mlp.down_proj.weight`, [hid, c.intermediateSize]);
    s.set(`${p}.input_layernorm.weight`, [hid]);
    s.set(`${p}.post_attention_layernorm.weight`, [hid]);
  }
  s.set("llm.model.norm.weight", [hid]);
  s.set("llm.lm_head.weight", [c.vocabSize, hid]);
  const v = cfg.vision;
  const vh = v.hiddenSize;
  const side = v.imageSize / v.patchSize;
  s.set("vpm.embeddings.patch_embedding.weight", [vh, 3, v.patchSize, v.patchSize]);
  s.set("vpm.embeddings.patch_embedding.bias", [vh]);
  s.set("vpm.embeddings.position_embedding.weight", [side * side, vh]);
  for (let i = 0; i < v.numLayers; i++) {
    const p = `vpm.encoder.layers.${i}`;
    for (const ln of ["layer_norm1", "layer_norm2"]) {
      s.set(`${p}.${ln}.weight`, [vh]);
      s.set(`${p}.${ln}.bias`, [vh]);
    }
    for (const pr of ["q", "k", "v", "out"]) {
      s.set(`${p}.self_attn.${pr}_proj.weight`, [vh, vh]);
      s.set(`${p}.self_attn.${pr}_proj.bias`, [vh]);
    }
    s.set(`${p}.mlp.fc1.weight`, [v.intermediateSize, vh]);
    s.set(`${p}.mlp.fc1.bias`, [v.intermediateSize]);
    s.set(`${p}.mlp.fc2.weight`, [vh, v.intermediateSize]);
    s.set(`${p}.mlp.fc2.bias`, [vh]);
  }
  s.set("vpm.post_layernorm.weight", [vh]);
  s.set("vpm.post_layernorm.bias", [vh]);
  const E = cfg.resampler.embedDim;
  s.set("resampler.query", [cfg.queryNum, E]);
  s.set("resampler.kv_proj.weight", [E, cfg.resampler.kvDim]);
  s.set("resampler.attn.in_proj_weight", [3 * E, E]);
  s.set("resampler.attn.in_proj_bias", [3 * E]);
  s.set("resampler.attn.out_proj.weight", [E, E]);
  s.set("resampler.attn.out_proj.bias", [E]);
  for (const ln of ["ln_q", "ln_kv", "ln_post"]) {
    s.set(`resampler.${ln}.weight`, [E]);
    s.set(`resampler.${ln}.bias`, [E]);
  }
  s.set("resampler.proj", [E, E]);
  return s;
}

/** mulberry32 stream. */
function rng(seed: number): () => number {
  let t = seed >>> 0;
  return () => {
    t = (t + 0x6d2b79f5) >>> 0;
    let r = Math.imul(t ^ (t >>> 15), t | 1);
    r ^= r + Math.imul(r ^ (r >>> 7), r | 61);
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random weights with TINY_MODEL.md-like scales (norms ≈ 1, fan-in scaled matrices), all in memory. */
export function randomWeights(cfg: ModelShape, seed: number): WeightSource & { map: TensorMap } {
  const tensors = new Map<string, Float32Array>();
  const next = rng(seed);
  for (const [name, dims] of tensorShapes(cfg)) {
    const n = dims.reduce((a, b) => a * b, 1);
    const fanIn = name === "resampler.proj" ? (dims[0] as number) : n / (dims[0] as number);
    let [c, a] = [0, Math.sqrt(3) / Math.sqrt(fanIn)];
    if (/norm\d?\.weight$|layernorm\.weight$|ln_(q|kv|post)\.weight$/.test(name)) [c, a] = [1, 0.1];
    else if (name.endsWith("bias")) [c, a] = [0, 0.02];
    else if (name.endsWith("embed_tokens.weight")) [c, a] = [0, 1];
    else if (name.endsWith("lm_head.weight")) [c, a] = [0, (4 * Math.sqrt(3)) / Math.sqrt(cfg.llm.hiddenSize)];
    else if (name === "resampler.query" || name.endsWith("position_embedding.weight")) [c, a] = [0, 0.5];
    const t = new Float32Array(n);
    for (let i = 0; i < n; i++) t[i] = c + a * (2 * next() - 1);
    tensors.set(name, t);
  }
  const map: TensorMap = (name) => {
    const t = tensors.get(name);
    if (!t) throw new Error(`no tensor ${name}`);
    return t;
  };
  return {
    config: cfg,
    contentHash: `random-${seed}-${JSON.stringify(cfg)}`,
    readTensor: async (name) => map(name),
    map,
  };
}

/** A small model shape; override any part. */
export function smallShape(o: {
  hidden: number;
  heads: number;
  kvHeads: number;
  layers?: number;
  vocab?: number;
  visionHidden?: number;
  visionHeads?: number;
  resamplerHeads: number;
}): ModelShape {
  const vh = o.visionHidden ?? 32;
  const vHeads = o.visionHeads ?? 2;
  return {
    llm: {
      hiddenSize: o.hidden,
      numLayers: o.layers ?? 2,
      numHeads: o.heads,
      numKvHeads: o.kvHeads,
      headDim: o.hidden / o.heads,
      intermediateSize: 2 * o.hidden,
      vocabSize: o.vocab ?? 300,
      rmsNormEps: 1e-6,
      ropeTheta: 1e6,
      maxPositionEmbeddings: 4096,
    },
    vision: {
      hiddenSize: vh,
      numLayers: 2,
      numHeads: vHeads,
      headDim: vh / vHeads,
      intermediateSize: 2 * vh,
      patchSize: 14,
      imageSize: 980,
      layerNormEps: 1e-6,
    },
    resampler: { embedDim: o.hidden, numHeads: o.resamplerHeads, kvDim: vh },
    queryNum: 64,
  };
}

/** The shared golden data folder: `<repo>/shared/golden` or `<repo>/../shared/golden`. */
export function goldenDir(): string {
  const repo = fileURLToPath(new URL("../../../", import.meta.url));
  for (const c of [join(repo, "shared", "golden"), join(repo, "..", "shared", "golden")]) if (existsSync(c)) return c;
  throw new Error(`golden data not found under ${repo}shared/golden or ${repo}../shared/golden`);
}

/** Reads a little-endian C-order .npy file (float32 or uint8) with its shape. */
export function readNpy(path: string): { shape: number[]; data: Float32Array | Uint8Array } {
  const buf = readFileSync(path);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString("latin1");
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path}: Fortran order not supported`);
  const body = buf.subarray(10 + headerLen);
  const copy = new Uint8Array(body).buffer;
  if (descr === "<f4") return { shape, data: new Float32Array(copy) };
  if (descr === "|u1") return { shape, data: new Uint8Array(copy) };
  throw new Error(`${path}: unsupported dtype ${descr}`);
}
