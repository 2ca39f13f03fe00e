/** How vision position buckets are computed (MINICPMV26.md §4.2). */
export type PositionIdMode = "torch-avx2" | "floor";

/** Side of the learned position table (980 / 14). */
export const NUM_PATCHES_PER_SIDE = 70;

const f32 = Math.fround;

/**
 * Per-axis bucket ids for `n` patches. "torch-avx2" emulates the reference's float32 `arange` (8-lane
 * AVX2 kernel) followed by `bucketize(right=True)` against float32 boundaries k/70; "floor" is the exact
 * `floor(70·i/n)`. They differ (by one) at some n, e.g. 25, 49, 50.
 */
export function axisBuckets(n: number, mode: PositionIdMode = "torch-avx2"): Int32Array {
  if (!Number.isInteger(n) || n < 1) throw new Error(`patch count: must be a positive integer, got ${n}`);
  const out = new Int32Array(n);
  if (mode === "floor") {
    for (let i = 0; i < n; i++) out[i] = Math.floor((NUM_PATCHES_PER_SIDE * i) / n);
    return out;
  }
  const coords = torchArangeF32(n);
  const bounds = new Float64Array(NUM_PATCHES_PER_SIDE - 1);
  for (let k = 1; k < NUM_PATCHES_PER_SIDE; k++) bounds[k - 1] = f32(k / NUM_PATCHES_PER_SIDE);
  for (let i = 0; i < n; i++) {
    let c = 0;
    for (const b of bounds) if (b <= (coords[i] as number)) c++;
    out[i] = c;
  }
  return out;
}

/** float32 `torch.arange(0, 1 - 1e-6, 1/n)` as the vectorised CPU kernel computes it (W = 8 lanes). */
function torchArangeF32(n: number): Float64Array {
  const step = f32(1 / n);
  const out = new Float64Array(n);
  let idx = 0;
  // NOTE: chunks of 2·W values are produced as base + j·step; the scalar tail as step·idx.
  while (idx + 16 <= n) {
    for (let rep = 0; rep < 2; rep++) {
      const base = f32(step * idx);
      for (let j = 0; j < 8; j++) out[idx + j] = f32(base + j * step);
      idx += 8;
    }
  }
  while (idx < n) {
    out[idx] = f32(step * idx);
    idx++;
  }
  return out;
}

/** Row-major position ids of an `nh × nw` patch grid: `bucket_h[r]·70 + bucket_w[c]`. */
export function visionPositionIds(nh: number, nw: number, mode: PositionIdMode = "torch-avx2"): BigInt64Array {
  const bh = axisBuckets(nh, mode);
  const bw = axisBuckets(nw, mode);
  const ids = new BigInt64Array(nh * nw);
  for (let r = 0; r < nh; r++)
    for (let c = 0; c < nw; c++) ids[r * nw + c] = BigInt((bh[r] as number) * NUM_PATCHES_PER_SIDE + (bw[c] as number));
  return ids;
}
