/**
 * int8 weights for the vision tower's `VISION_PRECISION=int8` mode: symmetric per-output-channel
 * quantization for com.microsoft DynamicQuantizeMatMul, and a data-free SmoothQuant-style scale fold for
 * the layers fed by a LayerNorm.
 *
 * DynamicQuantizeMatMul quantizes its activation input per tensor (one uint8 scale for the whole
 * [n·L, K] matrix). Post-LayerNorm activations of ViTs vary strongly between channels (RepQ-ViT, SmoothQuant),
 * and most of that variation comes from the LayerNorm's affine γ, β: a few channels with a large |γ|
 * would take most of the 8-bit range and leave the others a handful of levels. The fold moves that range
 * from the activations into the weights, exactly in real arithmetic:
 *
 *   LN(x)·W = (x̂·γ + β)·W = (x̂·γ/s + β/s) · (diag(s)·W)
 *
 * with s_j = sqrt(a_j / w_j) (SmoothQuant's α = 0.5), a_j = |γ_j| + |β_j| an estimate of channel j's
 * activation range (x̂ is normalised, so its own spread is the same for every channel), and w_j the
 * largest |W| in input row j. Per-output-channel weight scales then absorb the larger weight rows.
 */

/** Symmetric per-output-channel int8 weight for DynamicQuantizeMatMul: B [K, N] int8 and b_scale [N]. */
export interface Int8Weight {
  k: number;
  n: number;
  /** [K, N] row-major (MatMul's B layout) */
  data: Int8Array;
  /** [N] */
  scales: Float32Array;
}

/** Quantizes wT [K, N] (a Linear weight already transposed to MatMul's B) per output column N. */
export function quantizeInt8PerColumn(wT: Float32Array, k: number, n: number): Int8Weight {
  if (wT.length !== k * n) throw new Error(`quantizeInt8PerColumn: ${wT.length} elements is not ${k}x${n}`);
  const maxAbs = new Float32Array(n);
  for (let r = 0; r < k; r++)
    for (let c = 0; c < n; c++) {
      const a = Math.abs(wT[r * n + c] as number);
      if (a > (maxAbs[c] as number)) maxAbs[c] = a;
    }
  const scales = new Float32Array(n);
  for (let c = 0; c < n; c++) scales[c] = (maxAbs[c] as number) / 127 || 1;
  const data = new Int8Array(k * n);
  for (let r = 0; r < k; r++)
    for (let c = 0; c < n; c++) {
      const q = Math.round((wT[r * n + c] as number) / (scales[c] as number));
      data[r * n + c] = Math.max(-127, Math.min(127, q));
    }
  return { k, n, data, scales };
}

/** Dequantizes back to [K, N] f32 (tests and error reports). */
export function dequantizeInt8(q: Int8Weight): Float32Array {
  const out = new Float32Array(q.k * q.n);
  for (let r = 0; r < q.k; r++)
    for (let c = 0; c < q.n; c++) out[r * q.n + c] = (q.data[r * q.n + c] as number) * (q.scales[c] as number);
  return out;
}

/**
 * Smoothing scales s [K] for a LayerNorm (γ, β [K]) feeding the MatMul weights wTs (each [K, N_i]).
 * Channels with no activation range or no weight keep s = 1.
 */
export function smoothingScales(gamma: Float32Array, beta: Float32Array, wTs: { w: Float32Array; n: number }[]) {
  const k = gamma.length;
  const wMax = new Float32Array(k);
  for (const { w, n } of wTs) {
    if (w.length !== k * n) throw new Error(`smoothingScales: weight of ${w.length} is not ${k}x${n}`);
    for (let r = 0; r < k; r++)
      for (let c = 0; c < n; c++) {
        const a = Math.abs(w[r * n + c] as number);
        if (a > (wMax[r] as number)) wMax[r] = a;
      }
  }
  const s = new Float32Array(k);
  for (let j = 0; j < k; j++) {
    const a = Math.abs(gamma[j] as number) + Math.abs(beta[j] as number);
    const w = wMax[j] as number;
    s[j] = a > 0 && w > 0 ? Math.sqrt(a / w) : 1;
  }
  return s;
}

/** In place: row j of wT [K, N] times s_j. */
export function scaleRows(wT: Float32Array, n: number, s: Float32Array): void {
  for (let j = 0; j < s.length; j++) {
    const f = s[j] as number;
    for (let c = 0; c < n; c++) wT[j * n + c] = (wT[j * n + c] as number) * f;
  }
}

/** A copy of v with each element divided by s. */
export function divide(v: Float32Array, s: Float32Array): Float32Array {
  return v.map((x, j) => x / (s[j] as number));
}
