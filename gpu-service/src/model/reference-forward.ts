/**
 * Plain TypeScript forward passes (loops, float64 accumulation), used only in tests to catch graph bugs.
 * They follow MINICPMV26.md §1.4, §4 and §5 directly, without KV cache, paging or batching.
 */

import { ropeTables } from "./llm-graph";
import { type PositionIdMode, visionPositionIds } from "./position-ids";
import { sincos2d } from "./vision-graph";
import type { ModelShape } from "./weights";

/** Synchronous access to every tensor by checkpoint name. */
export type TensorMap = (name: string) => Float32Array;

/** y[r] = x[r] · Wᵀ + b for W [n, k]. */
function linear(x: Float64Array, rows: number, k: number, w: Float32Array, n: number, b?: Float32Array): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < n; j++) {
      let s = b ? (b[j] as number) : 0;
      const wo = j * k;
      const xo = r * k;
      for (let i = 0; i < k; i++) s += (x[xo + i] as number) * (w[wo + i] as number);
      y[r * n + j] = s;
    }
  return y;
}

function layerNorm(x: Float64Array, rows: number, d: number, w: Float32Array, b: Float32Array, eps: number) {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[r * d + i] as number;
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) v += ((x[r * d + i] as number) - mean) ** 2;
    const inv = 1 / Math.sqrt(v / d + eps);
    for (let i = 0; i < d; i++)
      y[r * d + i] = ((x[r * d + i] as number) - mean) * inv * (w[i] as number) + (b[i] as number);
  }
  return y;
}

function rmsNorm(x: Float64Array, rows: number, d: number, w: Float32Array, eps: number) {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += (x[r * d + i] as number) ** 2;
    const inv = 1 / Math.sqrt(s / d + eps);
    for (let i = 0; i < d; i++) y[r * d + i] = (x[r * d + i] as number) * inv * (w[i] as number);
  }
  return y;
}

/**
 * Multi-head attention: q [lq, heads·hd], k/v [lk, kvHeads·hd]; query head h uses KV head h/(heads/kvHeads);
 * `causalOffset` >= 0 hides key j > i + causalOffset from query i.
 */
function mha(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  lq: number,
  lk: number,
  heads: number,
  kvHeads: number,
  hd: number,
  causalOffset = -1,
) {
  const out = new Float64Array(lq * heads * hd);
  const g = heads / kvHeads;
  const sc = new Float64Array(lk);
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / g);
    for (let i = 0; i < lq; i++) {
      const lim = causalOffset >= 0 ? Math.min(lk, i + causalOffset + 1) : lk;
      let mx = -Infinity;
      for (let j = 0; j < lim; j++) {
        let s = 0;
        for (let d = 0; d < hd; d++)
          s += (q[(i * heads + h) * hd + d] as number) * (k[(j * kvHeads + kh) * hd + d] as number);
        s /= Math.sqrt(hd);
        sc[j] = s;
        if (s > mx) mx = s;
      }
      let z = 0;
      for (let j = 0; j < lim; j++) {
        sc[j] = Math.exp((sc[j] as number) - mx);
        z += sc[j] as number;
      }
      for (let j = 0; j < lim; j++) {
        const p = (sc[j] as number) / z;
        for (let d = 0; d < hd; d++) out[(i * heads + h) * hd + d] += p * (v[(j * kvHeads + kh) * hd + d] as number);
      }
    }
  }
  return out;
}

const add = (a: Float64Array, b: Float64Array) => {
  for (let i = 0; i < a.length; i++) a[i] = (a[i] as number) + (b[i] as number);
};

/** Vision tower + resampler for one slice of normalised pixels [3, H, W] -> [queryNum · embedDim]. */
export function referenceVision(
  cfg: ModelShape,
  t: TensorMap,
  pixels: Float32Array,
  H: number,
  W: number,
  mode: PositionIdMode = "torch-avx2",
): Float64Array {
  const v = cfg.vision;
  const P = v.patchSize;
  const nh = H / P;
  const nw = W / P;
  const n = nh * nw;
  const vh = v.hiddenSize;
  const cw = t("vpm.embeddings.patch_embedding.weight");
  const cb = t("vpm.embeddings.patch_embedding.bias");
  const table = t("vpm.embeddings.position_embedding.weight");
  const ids = visionPositionIds(nh, nw, mode);
  let x = new Float64Array(n * vh);
  for (let r = 0; r < nh; r++)
    for (let c = 0; c < nw; c++) {
      const pi = r * nw + c;
      const pid = Number(ids[pi]);
      for (let o = 0; o < vh; o++) {
        let s = cb[o] as number;
        for (let ch = 0; ch < 3; ch++)
          for (let ky = 0; ky < P; ky++)
            for (let kx = 0; kx < P; kx++)
              s +=
                (cw[((o * 3 + ch) * P + ky) * P + kx] as number) *
                (pixels[(ch * H + r * P + ky) * W + c * P + kx] as number);
        x[pi * vh + o] = s + (table[pid * vh + o] as number);
      }
    }
  const eps = v.layerNormEps;
  for (let i = 0; i < v.numLayers; i++) {
    const p = `vpm.encoder.layers.${i}`;
    const h = layerNorm(x, n, vh, t(`${p}.layer_norm1.weight`), t(`${p}.layer_norm1.bias`), eps);
    const lin = (a: Float64Array, name: string, k: number, m: number) =>
      linear(a, n, k, t(`${name}.weight`), m, t(`${name}.bias`));
    const q = lin(h, `${p}.self_attn.q_proj`, vh, vh);
    const k = lin(h, `${p}.self_attn.k_proj`, vh, vh);
    const vv = lin(h, `${p}.self_attn.v_proj`, vh, vh);
    const a = mha(q, k, vv, n, n, v.numHeads, v.numHeads, v.headDim);
    add(x, lin(a, `${p}.self_attn.out_proj`, vh, vh));
    const h2 = layerNorm(x, n, vh, t(`${p}.layer_norm2.weight`), t(`${p}.layer_norm2.bias`), eps);
    const f1 = lin(h2, `${p}.mlp.fc1`, vh, v.intermediateSize);
    for (let j = 0; j < f1.length; j++) {
      const z = f1[j] as number;
      f1[j] = 0.5 * z * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z * z * z)));
    }
    add(x, lin(f1, `${p}.mlp.fc2`, v.intermediateSize, vh));
  }
  x = layerNorm(x, n, vh, t("vpm.post_layernorm.weight"), t("vpm.post_layernorm.bias"), eps);

  // Resampler
  const E = cfg.resampler.embedDim;
  const Q = cfg.queryNum;
  const ln = (a: Float64Array, rows: number, name: string) =>
    layerNorm(a, rows, E, t(`${name}.weight`), t(`${name}.bias`), 1e-6);
  const kv = ln(linear(x, n, vh, t("resampler.kv_proj.weight"), E), n, "resampler.ln_kv");
  const pos = sincos2d(nh, nw, E);
  const keys = Float64Array.from(kv, (val, i) => val + (pos[i] as number));
  const q = ln(Float64Array.from(t("resampler.query")), Q, "resampler.ln_q");
  const inW = t("resampler.attn.in_proj_weight");
  const inB = t("resampler.attn.in_proj_bias");
  const part = (a: Float64Array, rows: number, i: number) =>
    linear(a, rows, E, inW.subarray(i * E * E, (i + 1) * E * E), E, inB.subarray(i * E, (i + 1) * E));
  const heads = cfg.resampler.numHeads;
  const o = mha(part(q, Q, 0), part(keys, n, 1), part(kv, n, 2), Q, n, heads, heads, E / heads);
  const oo = ln(
    linear(o, Q, E, t("resampler.attn.out_proj.weight"), E, t("resampler.attn.out_proj.bias")),
    Q,
    "resampler.ln_post",
  );
  const proj = t("resampler.proj"); // used un-transposed: y[j] = Σ_i x[i]·proj[i][j]
  const y = new Float64Array(Q * E);
  for (let r = 0; r < Q; r++)
    for (let i = 0; i < E; i++) {
      const a = oo[r * E + i] as number;
      for (let j = 0; j < E; j++) y[r * E + j] = (y[r * E + j] as number) + a * (proj[i * E + j] as number);
    }
  return y;
}

/**
 * Qwen2 forward over a whole token sequence (no cache); `embeds` replace token embeddings from `offset`.
 * Returns the logits [vocab] of each row in `logitRows`.
 */
export function referenceLlm(
  cfg: ModelShape,
  t: TensorMap,
  tokens: ArrayLike<number>,
  embeds: { offset: number; rows: Float32Array }[],
  logitRows: number[],
): Float64Array[] {
  const c = cfg.llm;
  const n = tokens.length;
  const hid = c.hiddenSize;
  const emb = t("llm.model.embed_tokens.weight");
  const x = new Float64Array(n * hid);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < hid; j++) x[i * hid + j] = emb[(tokens[i] as number) * hid + j] as number;
  for (const e of embeds) for (let j = 0; j < e.rows.length; j++) x[e.offset * hid + j] = e.rows[j] as number;
  const { H, KVH, D } = { H: c.numHeads, KVH: c.numKvHeads, D: c.headDim };
  const rope = ropeTables(n, D, c.ropeTheta);
  const applyRope = (a: Float64Array, heads: number) => {
    const half = D / 2;
    for (let i = 0; i < n; i++)
      for (let h = 0; h < heads; h++) {
        const o = (i * heads + h) * D;
        for (let d = 0; d < half; d++) {
          const cs = rope.cos[i * half + d] as number;
          const sn = rope.sin[i * half + d] as number;
          const a0 = a[o + d] as number;
          const a1 = a[o + half + d] as number;
          a[o + d] = a0 * cs - a1 * sn;
          a[o + half + d] = a1 * cs + a0 * sn;
        }
      }
  };
  for (let l = 0; l < c.numLayers; l++) {
    const p = `llm.model.layers.${l}`;
    const h = rmsNorm(x, n, hid, t(`${p}.input_layernorm.weight`), c.rmsNormEps);
    const q = linear(h, n, hid, t(`${p}.self_attn.q_proj.weight`), H * D, t(`${p}.self_attn.q_proj.bias`));
    const k = linear(h, n, hid, t(`${p}.self_attn.k_proj.weight`), KVH * D, t(`${p}.self_attn.k_proj.bias`));
    const v = linear(h, n, hid, t(`${p}.self_attn.v_proj.weight`), KVH * D, t(`${p}.self_attn.v_proj.bias`));
    applyRope(q, H);
    applyRope(k, KVH);
    const a = mha(q, k, v, n, n, H, KVH, D, 0);
    add(x, linear(a, n, H * D, t(`${p}.self_attn.o_proj.weight`), hid));
    const h2 = rmsNorm(x, n, hid, t(`${p}.post_attention_layernorm.weight`), c.rmsNormEps);
    const gate = linear(h2, n, hid, t(`${p}.mlp.gate_proj.weight`), c.intermediateSize);
    const up = linear(h2, n, hid, t(`${p}.mlp.up_proj.weight`), c.intermediateSize);
    for (let i = 0; i < gate.length; i++) {
      const z = gate[i] as number;
      gate[i] = (z / (1 + Math.exp(-z))) * (up[i] as number);
    }
    add(x, linear(gate, n, c.intermediateSize, t(`${p}.mlp.down_proj.weight`), hid));
  }
  return logitRows.map((r) => {
    const row = rmsNorm(x.slice(r * hid, (r + 1) * hid), 1, hid, t("llm.model.norm.weight"), c.rmsNormEps);
    return linear(row, 1, hid, t("llm.lm_head.weight"), c.vocabSize);
  });
}
