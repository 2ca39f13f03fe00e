import { ModelBuilder } from "./graph-builder";
import { LayerFactory } from "./graph-ops";
import type { WeightSource } from "./weights";

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

/**
 * Builds the vision tower (SigLIP, NaViT-style) + resampler for a batch of equal-size slices.
 *
 * ```
 * pixels [n,3,H,W] ─Conv14/14─> [n,vh,h,w] ─> [n,L,vh] + posTable[position_ids] ─> encoder ×layers ─> post-LN
 *   encoder: x += out(MHA(LN1 x));  x += fc2(gelu_tanh(fc1(LN2 x)))
 * feats [n,L,vh] ─kv_proj─> LN_kv = kv [n,L,E];  keys = kv + pos2d;  q = LN_q(query) [Q,E]
 *   MHA(q; keys, kv) [n,Q,E] ─out_proj─> LN_post ─· proj (un-transposed)─> image_embeds [n,Q,E]
 * ```
 */
export async function buildVisionGraph(src: WeightSource, externalDataPath?: string): Promise<Uint8Array> {
  const cfg = src.config;
  const v = cfg.vision;
  const E = cfg.resampler.embedDim;
  const Q = cfg.queryNum;
  const side = v.imageSize / v.patchSize;
  const m = new ModelBuilder("minicpmv_vision", {
    ...(externalDataPath ? { externalDataPath } : {}),
    metadata: { io: JSON.stringify(VISION_IO) },
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

  const hd = v.headDim;
  for (let i = 0; i < v.numLayers; i++) {
    const p = `vpm.encoder.layers.${i}`;
    const h = await L.layerNorm(x, `${p}.layer_norm1`, vh, v.layerNormEps);
    const att = await attention(L, h, h, h, `${p}.self_attn`, vh, v.numHeads, hd, "separate");
    x = g.op("Add", [
      x,
      await L.linear(att, `${p}.self_attn.out_proj.weight`, vh, vh, "f32", `${p}.self_attn.out_proj.bias`),
    ]);
    const h2 = await L.layerNorm(x, `${p}.layer_norm2`, vh, v.layerNormEps);
    const f1 = await L.linear(h2, `${p}.mlp.fc1.weight`, vh, v.intermediateSize, "f32", `${p}.mlp.fc1.bias`);
    const act = g.op("Gelu", [f1], { approximate: "tanh" });
    x = g.op("Add", [
      x,
      await L.linear(act, `${p}.mlp.fc2.weight`, v.intermediateSize, vh, "f32", `${p}.mlp.fc2.bias`),
    ]);
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
  const o = await attention(
    L,
    qn,
    keys,
    kv,
    "resampler.attn",
    E,
    cfg.resampler.numHeads,
    E / cfg.resampler.numHeads,
    "packed",
  );
  const oo = await L.linear(o, "resampler.attn.out_proj.weight", E, E, "f32", "resampler.attn.out_proj.bias");
  const post = await L.layerNorm(oo, "resampler.ln_post", E, 1e-6);
  // NOTE: proj is applied as x · proj (not transposed like a Linear weight).
  const proj = await L.tensor("resampler.proj", [E, E]);
  g.output(g.op("MatMul", [post, proj]), VISION_IO.output, "float32", ["n", Q, E]);
  return m.finish();
}

/**
 * Multi-head attention without mask: q [nq|1, Lq, dim], k/v [n, Lk, dim] -> [n, Lq, dim].
 * `separate`: `<p>.{q,k,v}_proj.{weight,bias}`; `packed`: nn.MultiheadAttention `<p>.in_proj_{weight,bias}`.
 */
async function attention(
  L: LayerFactory,
  qIn: string,
  kIn: string,
  vIn: string,
  p: string,
  dim: number,
  heads: number,
  hd: number,
  layout: "separate" | "packed",
): Promise<string> {
  const g = L.g;
  let q: string;
  let k: string;
  let v: string;
  if (layout === "separate") {
    q = await L.linear(qIn, `${p}.q_proj.weight`, dim, dim, "f32", `${p}.q_proj.bias`);
    k = await L.linear(kIn, `${p}.k_proj.weight`, dim, dim, "f32", `${p}.k_proj.bias`);
    v = await L.linear(vIn, `${p}.v_proj.weight`, dim, dim, "f32", `${p}.v_proj.bias`);
  } else {
    const w = await L.src.readTensor(`${p}.in_proj_weight`); // [3·dim, dim]
    const b = await L.src.readTensor(`${p}.in_proj_bias`); // [3·dim]
    if (w.length !== 3 * dim * dim || b.length !== 3 * dim) throw new Error(`${p}.in_proj: bad shape`);
    const part = (i: number) => {
      const wt = g.init(`${p}.in_proj_weight.${i}.T`, "float32", [dim, dim], transposeRows(w, i * dim, dim, dim));
      const bi = g.init(`${p}.in_proj_bias.${i}`, "float32", [dim], b.slice(i * dim, (i + 1) * dim));
      return [wt, bi] as const;
    };
    const [wq, bq] = part(0);
    const [wk, bk] = part(1);
    const [wv, bv] = part(2);
    q = g.op("Add", [g.op("MatMul", [qIn, wq]), bq]);
    k = g.op("Add", [g.op("MatMul", [kIn, wk]), bk]);
    v = g.op("Add", [g.op("MatMul", [vIn, wv]), bv]);
  }
  // [*, L, dim] -> [*, heads, L, hd]
  const split = (t: string) => L.transpose(L.reshape(t, [0, 0, heads, hd]), [0, 2, 1, 3]);
  const scores = g.op(
    "FusedMatMul",
    [split(q), split(k)],
    { transB: 1, alpha: { f: 1 / Math.sqrt(hd) } },
    { domain: "com.microsoft" },
  );
  const probs = g.op("Softmax", [scores], { axis: -1 }); // [n, heads, Lq, Lk]
  const o = g.op("MatMul", [probs, split(v)]); // [n, heads, Lq, hd]
  return L.reshape(L.transpose(o, [0, 2, 1, 3]), [0, 0, dim]); // [n, Lq, dim]
}

/** Rows [r0, r0+rows) of a row-major [*, cols] matrix, transposed to [cols, rows]. */
function transposeRows(w: Float32Array, r0: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[(r0 + r) * cols + c] as number;
  return out;
}
