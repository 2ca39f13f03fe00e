import { ModelBuilder } from "./graph-builder";
import { LayerFactory } from "./graph-ops";
import { divide, quantizeInt8PerColumn, scaleRows, smoothingScales } from "./int8";
import { transpose, type WeightSource } from "./weights";

/** I/O names of the vision graph (defined once; also stored in the model's metadata). */
export const VISION_IO = {
  /** [n, 3, H, W] f32, normalised pixels of n slices of equal size */
  pixels: "pixel_values",
  /** [L] int64, learned position ids of the L = (H/14)·(W/14) patches, row-major */
  positionIds: "position_ids",
  /** [L, embedDim] f32, the resampler's 2-D sin-cos key embedding for the (h, w) grid */
  pos2d: "pos_embed_2d",
  /** [n, queryNum, embedDim] f32 */
  output: "image_embeds",
} as const;

/**
 * Resampler 2-D sin-cos embedding (MINICPMV26.md §5) for an h×w grid, row-major:
 * pe(r, c) = [sin(c·ω), cos(c·ω), sin(r·ω), cos(r·ω)], ω_k = 1/10000^(k/(dim/4)), all float32 like numpy.
 * NOTE: the column (x) block comes first.
 */
export function sincos2d(h: number, w: number, dim: number): Float32Array {
  if (dim % 4 !== 0) throw new Error(`resampler embedDim: must be a multiple of 4, got ${dim}`);
  const f = Math.fround;
  const q = dim / 4;
  const omega = new Float64Array(q);
  for (let k = 0; k < q; k++) omega[k] = f(1 / f(10000 ** f(k / q)));
  const out = new Float32Array(h * w * dim);
  for (let r = 0; r < h; r++)
    for (let c = 0; c < w; c++) {
      const o = (r * w + c) * dim;
      for (let k = 0; k < q; k++) {
        const om = omega[k] as number;
        const ac = f(c * om);
        const ar = f(r * om);
        out[o + k] = Math.sin(ac);
        out[o + q + k] = Math.cos(ac);
        out[o + 2 * q + k] = Math.sin(ar);
        out[o + 3 * q + k] = Math.cos(ar);
      }
    }
  return out;
}

/** Numeric mode of the vision tower (`VISION_PRECISION`). */
export type VisionPrecision = "f32" | "int8";

/**
 * Builds the vision tower (SigLIP, NaViT-style) + resampler for a batch of equal-size slices.
 *
 * ```
 * pixels [n,3,H,W] ─Conv14/14─> [n,vh,h,w] ─> [n,L,vh] + posTable[position_ids] ─> encoder ×layers ─> post-LN
 *   encoder: x += out(MHA(qkv(LN1 x)));  x += fc2(gelu_tanh(fc1(LN2 x)))
 * feats [n,L,vh] ─kv_proj─> LN_kv = kv [n,L,E];  keys = kv + pos2d;  q = LN_q(query) [Q,E] expanded to n
 *   MHA(q; keys, kv) [n,Q,E] ─out_proj─> LN_post ─· proj (un-transposed)─> image_embeds [n,Q,E]
 * ```
 *
 * Attention is com.microsoft MultiHeadAttention (one fused kernel instead of MatMul/Softmax/MatMul);
 * q, k, v of an encoder layer come from one [vh, 3·vh] MatMul. `int8` replaces every encoder linear by
 * DynamicQuantizeMatMul over per-output-channel int8 weights, with the LayerNorm-fed ones (qkv, fc1)
 * smoothed first (int8.ts); the resampler (about 7% of the work) stays f32.
 */
export async function buildVisionGraph(
  src: WeightSource,
  externalDataPath?: string,
  precision: VisionPrecision = "f32",
): Promise<Uint8Array> {
  const cfg = src.config;
  const v = cfg.vision;
  const E = cfg.resampler.embedDim;
  const Q = cfg.queryNum;
  const side = v.imageSize / v.patchSize;
  const m = new ModelBuilder("minicpmv_vision", {
    ...(externalDataPath ? { externalDataPath } : {}),
    metadata: { io: JSON.stringify(VISION_IO), precision },
  });
  const g = m.graph;
  const L = new LayerFactory(g, src);
  const P = v.patchSize;
  const vh = v.hiddenSize;

  const pixels = g.input(VISION_IO.pixels, "float32", ["n", 3, "H", "W"]);
  const posIds = g.input(VISION_IO.positionIds, "int64", ["L"]);
  const pos2d = g.input(VISION_IO.pos2d, "float32", ["L", E]);

  // Patch embedding: [n,3,H,W] -> [n,vh,h,w] -> [n,vh,L] -> [n,L,vh]
  const convW = await L.tensor("vpm.embeddings.patch_embedding.weight", [vh, 3, P, P]);
  const convB = await L.tensor("vpm.embeddings.patch_embedding.bias", [vh]);
  const conv = g.op("Conv", [pixels, convW, convB], { kernel_shape: [P, P], strides: [P, P] });
  const patches = L.transpose(L.reshape(conv, [0, 0, -1]), [0, 2, 1]);
  const table = await L.tensor("vpm.embeddings.position_embedding.weight", [side * side, vh]);
  let x = g.op("Add", [patches, g.op("Gather", [table, posIds], { axis: 0 })]); // [n,L,vh]

  const enc = new EncoderLinears(L, precision);
  for (let i = 0; i < v.numLayers; i++) {
    const p = `vpm.encoder.layers.${i}`;
    const qkvNames = ["q", "k", "v"].map((t) => `${p}.self_attn.${t}_proj`);
    const qkv = await enc.lnLinear(
      x,
      `${p}.layer_norm1`,
      v.layerNormEps,
      qkvNames.map((n) => `${n}.weight`),
      qkvNames.map((n) => `${n}.bias`),
      vh,
      vh,
      `${p}.self_attn.qkv`,
    );
    const [q, k, vv] = g.opN("Split", [qkv, g.i64([vh, vh, vh])], 3, { axis: -1 }) as [string, string, string];
    const att = g.op("MultiHeadAttention", [q, k, vv], { num_heads: v.numHeads }, { domain: "com.microsoft" });
    x = g.op("Add", [x, await enc.linear(att, `${p}.self_attn.out_proj`, vh, vh)]);
    const f1 = await enc.lnLinear(
      x,
      `${p}.layer_norm2`,
      v.layerNormEps,
      [`${p}.mlp.fc1.weight`],
      [`${p}.mlp.fc1.bias`],
      vh,
      v.intermediateSize,
      `${p}.mlp.fc1`,
    );
    const act = g.op("Gelu", [f1], { approximate: "tanh" });
    x = g.op("Add", [x, await enc.linear(act, `${p}.mlp.fc2`, v.intermediateSize, vh)]);
  }
  const feats = await L.layerNorm(x, "vpm.post_layernorm", vh, v.layerNormEps); // [n,L,vh]

  // Resampler (§5)
  const kv = await L.layerNorm(
    await L.linear(feats, "resampler.kv_proj.weight", vh, E, "f32"),
    "resampler.ln_kv",
    E,
    1e-6,
  );
  const keys = g.op("Add", [kv, pos2d]); // [n,L,E]
  const query = await L.tensor("resampler.query", [Q, E]);
  const qn = L.reshape(await L.layerNorm(query, "resampler.ln_q", E, 1e-6), [1, Q, E]); // [1,Q,E]
  // nn.MultiheadAttention's packed in_proj, split into q/k/v (transposed for MatMul)
  const p = "resampler.attn";
  const w = await src.readTensor(`${p}.in_proj_weight`); // [3·E, E]
  const b = await src.readTensor(`${p}.in_proj_bias`); // [3·E]
  if (w.length !== 3 * E * E || b.length !== 3 * E) throw new Error(`${p}.in_proj: bad shape`);
  const proj3 = (inp: string, i: number) => {
    const wt = g.init(`${p}.in_proj_weight.${i}.T`, "float32", [E, E], transposeRows(w, i * E, E, E));
    const bi = g.init(`${p}.in_proj_bias.${i}`, "float32", [E], b.slice(i * E, (i + 1) * E));
    return g.op("Add", [g.op("MatMul", [inp, wt]), bi]);
  };
  const rq = proj3(qn, 0); // [1,Q,E], constant: folded by ORT at load
  const rk = proj3(keys, 1); // [n,L,E]
  const rv = proj3(kv, 2);
  // MultiHeadAttention wants the same batch on every input: the 64 queries are shared by the n slices
  const qShape = g.op("Concat", [g.op("Shape", [rk], { start: 0, end: 1 }), g.i64([Q, E])], { axis: 0 });
  const o = g.op(
    "MultiHeadAttention",
    [g.op("Expand", [rq, qShape]), rk, rv],
    { num_heads: cfg.resampler.numHeads },
    { domain: "com.microsoft" },
  ); // [n,Q,E]
  const oo = await L.linear(o, "resampler.attn.out_proj.weight", E, E, "f32", "resampler.attn.out_proj.bias");
  const post = await L.layerNorm(oo, "resampler.ln_post", E, 1e-6);
  // NOTE: proj is applied as x · proj (not transposed like a Linear weight).
  const proj = await L.tensor("resampler.proj", [E, E]);
  g.output(g.op("MatMul", [post, proj]), VISION_IO.output, "float32", ["n", Q, E]);
  return m.finish();
}

/** The encoder's linear layers in f32 (MatMul + Add) or int8 (DynamicQuantizeMatMul with bias). */
class EncoderLinears {
  constructor(
    readonly L: LayerFactory,
    readonly precision: VisionPrecision,
  ) {}

  /** y = x·Wᵀ + b for `<p>.weight` [n, k], `<p>.bias` [n]. */
  async linear(x: string, p: string, k: number, n: number): Promise<string> {
    const wT = transpose(await this.L.src.readTensor(`${p}.weight`), n, k);
    return this.matmul(x, p, wT, k, n, await this.L.src.readTensor(`${p}.bias`));
  }

  /**
   * LayerNorm(x) followed by the Linear weights `weights` (each [n, k]) concatenated along the output:
   * y = LN(x)·[W1ᵀ | W2ᵀ | …] + [b1 | b2 | …]. In int8 mode the LayerNorm's γ, β are divided by the
   * smoothing scales and the weight rows multiplied by them (int8.ts).
   */
  async lnLinear(
    x: string,
    ln: string,
    eps: number,
    weights: string[],
    biases: string[],
    k: number,
    n: number,
    name: string,
  ): Promise<string> {
    const { g, src } = this.L;
    const N = n * weights.length;
    const wT = new Float32Array(k * N);
    for (const [i, wName] of weights.entries()) {
      const part = transpose(await src.readTensor(wName), n, k); // [k, n]
      for (let r = 0; r < k; r++) wT.set(part.subarray(r * n, (r + 1) * n), r * N + i * n);
    }
    const bias = new Float32Array(N);
    for (const [i, bName] of biases.entries()) bias.set(await src.readTensor(bName), i * n);
    let gamma = await src.readTensor(`${ln}.weight`);
    let beta = await src.readTensor(`${ln}.bias`);
    if (gamma.length !== k || beta.length !== k) throw new Error(`${ln}: expected ${k} values`);
    if (this.precision === "int8") {
      const s = smoothingScales(gamma, beta, [{ w: wT, n: N }]);
      scaleRows(wT, N, s);
      gamma = divide(gamma, s);
      beta = divide(beta, s);
    }
    const h = g.op(
      "LayerNormalization",
      [x, g.init(`${ln}.weight`, "float32", [k], gamma), g.init(`${ln}.bias`, "float32", [k], beta)],
      {
        axis: -1,
        epsilon: { f: eps },
      },
    );
    return this.matmul(h, name, wT, k, N, bias);
  }

  private matmul(x: string, name: string, wT: Float32Array, k: number, n: number, bias: Float32Array): string {
    const g = this.L.g;
    const b = g.init(`${name}.bias`, "float32", [n], bias);
    if (this.precision === "int8") {
      const q = quantizeInt8PerColumn(wT, k, n);
      const qw = g.init(`${name}.weight.T.i8`, "int8", [k, n], q.data);
      const sc = g.init(`${name}.weight.scales`, "float32", [n], q.scales);
      return g.op("DynamicQuantizeMatMul", [x, qw, sc, "", b], {}, { domain: "com.microsoft" });
    }
    return g.op("Add", [g.op("MatMul", [x, g.init(`${name}.weight.T`, "float32", [k, n], wT)]), b]);
  }
}
/** Rows [r0, r0+rows) of a row-major [*, cols] matrix, transposed to [cols, rows]. */
function transposeRows(w: Float32Array, r0: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[(r0 + r) * cols + c] as number;
  return out;
}
