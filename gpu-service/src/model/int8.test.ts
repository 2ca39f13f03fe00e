import { describe, expect, it } from "vitest";
import { dequantizeInt8, divide, quantizeInt8PerColumn, scaleRows, smoothingScales } from "./int8";

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

/** y = x·w with x quantized per tensor to uint8 (as DynamicQuantizeMatMul does) and w per column to int8. */
function int8MatMul(x: Float32Array, w: Float32Array, m: number, k: number, n: number): Float32Array {
  let lo = 0;
  let hi = 0;
  for (const v of x) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  const scale = (hi - lo) / 255;
  const zp = Math.round(-lo / scale);
  const xq = x.map((v) => (Math.max(0, Math.min(255, Math.round(v / scale) + zp)) - zp) * scale);
  return matmul(xq, dequantizeInt8(quantizeInt8PerColumn(w, k, n)), m, k, n);
}

function matmul(x: Float32Array, w: Float32Array, m: number, k: number, n: number): Float32Array {
  const y = new Float32Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < k; j++) {
      const a = x[i * k + j] as number;
      for (let c = 0; c < n; c++) y[i * n + c] = (y[i * n + c] as number) + a * (w[j * n + c] as number);
    }
  return y;
}

function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += ((a[i] as number) - (b[i] as number)) ** 2;
    den += (b[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

describe("int8 weights", () => {
  it("per-column int8 round-trips within half a step of each column's scale", () => {
    const r = rng(1);
    const [k, n] = [37, 11];
    const w = Float32Array.from({ length: k * n }, (_, i) => r() * (1 + (i % n)));
    const q = quantizeInt8PerColumn(w, k, n);
    const back = dequantizeInt8(q);
    for (let i = 0; i < w.length; i++)
      expect(Math.abs((back[i] as number) - (w[i] as number))).toBeLessThanOrEqual(
        (q.scales[i % n] as number) / 2 + 1e-9,
      );
    // the largest value of each column maps to ±127
    for (let c = 0; c < n; c++) {
      let m = 0;
      for (let j = 0; j < k; j++) m = Math.max(m, Math.abs(q.data[j * n + c] as number));
      expect(m).toBe(127);
    }
  });

  it("the LayerNorm fold is exact in f32 and cuts the int8 error when a few channels carry outliers", () => {
    const r = rng(7);
    const [m, k, n] = [64, 96, 48];
    const xhat = Float32Array.from({ length: m * k }, () => 2 * r()); // normalised activations
    const gamma = Float32Array.from({ length: k }, (_, j) => (j % 24 === 0 ? 40 : 1 + 0.2 * r())); // 4 outlier channels
    const beta = Float32Array.from({ length: k }, () => 0.1 * r());
    const w = Float32Array.from({ length: k * n }, () => r() / Math.sqrt(k));
    const ln = (g: Float32Array, b: Float32Array) =>
      xhat.map((v, i) => v * (g[i % k] as number) + (b[i % k] as number));
    const exact = matmul(ln(gamma, beta), w, m, k, n);

    const s = smoothingScales(gamma, beta, [{ w, n }]);
    const ws = w.slice();
    scaleRows(ws, n, s);
    const folded = ln(divide(gamma, s), divide(beta, s));
    expect(relErr(matmul(folded, ws, m, k, n), exact)).toBeLessThan(1e-5);

    const plain = relErr(int8MatMul(ln(gamma, beta), w, m, k, n), exact);
    const smoothed = relErr(int8MatMul(folded, ws, m, k, n), exact);
    expect(smoothed).toBeLessThan(plain / 3);
    expect(smoothed).toBeLessThan(0.02);
  });
});
