/**
 * Weight access and conversion for the graph builders: the structural view of a checkpoint the model
 * layer needs, f32 transposes, f16 rounding and int4 block quantization for com.microsoft MatMulNBits.
 */
import type { ModelConfig } from "../checkpoint";
import { f32ToF16Bits } from "../checkpoint/dtype";

/** The model shape the graphs are built from (a subset of the checkpoint's ModelConfig). */
export type ModelShape = Pick<ModelConfig, "vision" | "resampler" | "queryNum"> & {
  llm: Omit<ModelConfig["llm"], "tieWordEmbeddings"> & { tieWordEmbeddings?: boolean };
};

/** Where the builders read float32 tensors from (a loaded checkpoint, or random weights in tests). */
export interface WeightSource {
  readonly config: ModelShape;
  /** Identifies the weights' content; part of the on-disk graph cache key. */
  readonly contentHash: string;
  readTensor(name: string): Promise<Float32Array>;
}

/** How LLM linear weights are stored in the graph. */
export type WeightFormat = "f32" | "int4" | "f16";

/** Transposes a row-major [rows, cols] matrix into [cols, rows]. */
export function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  if (w.length !== rows * cols) throw new Error(`transpose: ${w.length} elements is not ${rows}x${cols}`);
  const out = new Float32Array(w.length);
  const TILE = 64;
  for (let r0 = 0; r0 < rows; r0 += TILE)
    for (let c0 = 0; c0 < cols; c0 += TILE) {
      const r1 = Math.min(rows, r0 + TILE);
      const c1 = Math.min(cols, c0 + TILE);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * rows + r] = w[r * cols + c] as number;
    }
  return out;
}

/** IEEE half bits from a float, round to nearest even (overflow to ±inf, subnormals kept). */
export const toHalf = f32ToF16Bits;

export function toHalfArray(w: Float32Array): Uint16Array {
  const out = new Uint16Array(w.length);
  for (let i = 0; i < w.length; i++) out[i] = toHalf(w[i] as number);
  return out;
}

/** Block size of the int4 quantization (MatMulNBits `block_size`). */
export const INT4_BLOCK = 32;

/** A [N, K] weight quantized for MatMulNBits (bits 4, asymmetric, one scale + zero point per 32 values). */
export interface Int4Weight {
  n: number;
  k: number;
  /** [N, blocksPerRow, 16] packed nibbles, element 2i in the low nibble. */
  packed: Uint8Array;
  /** [N · blocksPerRow] */
  scales: Float32Array;
  /** [N · ceil(blocksPerRow / 2)] packed zero points, low nibble first. */
  zeroPoints: Uint8Array;
}

/**
 * Quantizes a Linear weight `w` [N = out, K = in] (row-major, as stored in the checkpoint) to int4 with
 * min/max scaling per block of 32 along K. A ragged last block is zero-padded.
 */
export function quantizeInt4(w: Float32Array, n: number, k: number): Int4Weight {
  if (w.length !== n * k) throw new Error(`quantizeInt4: ${w.length} elements is not ${n}x${k}`);
  const nb = Math.ceil(k / INT4_BLOCK);
  const zpRow = Math.ceil(nb / 2);
  const packed = new Uint8Array(n * nb * (INT4_BLOCK / 2));
  const scales = new Float32Array(n * nb);
  const zeroPoints = new Uint8Array(n * zpRow);
  for (let r = 0; r < n; r++) {
    for (let b = 0; b < nb; b++) {
      const k0 = b * INT4_BLOCK;
      const k1 = Math.min(k, k0 + INT4_BLOCK);
      let lo = 0;
      let hi = 0;
      for (let i = k0; i < k1; i++) {
        const v = w[r * k + i] as number;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      // NOTE: the range always includes 0 so that zero padding and exact zeros stay exact.
      const scale = (hi - lo) / 15 || 1;
      const zp = Math.min(15, Math.max(0, Math.round(-lo / scale)));
      scales[r * nb + b] = scale;
      const zi = r * zpRow + (b >> 1);
      zeroPoints[zi] = (zeroPoints[zi] as number) | (b & 1 ? zp << 4 : zp);
      const base = (r * nb + b) * (INT4_BLOCK / 2);
      for (let i = 0; i < INT4_BLOCK; i++) {
        const v = k0 + i < k1 ? (w[r * k + k0 + i] as number) : 0;
        const q = Math.min(15, Math.max(0, Math.round(v / scale) + zp));
        const pi = base + (i >> 1);
        packed[pi] = (packed[pi] as number) | (i & 1 ? q << 4 : q);
      }
    }
  }
  return { n, k, packed, scales, zeroPoints };
}

/** Dequantizes an int4 weight back to [N, K] (for tests and error reports). */
export function dequantizeInt4(q: Int4Weight): Float32Array {
  const nb = Math.ceil(q.k / INT4_BLOCK);
  const zpRow = Math.ceil(nb / 2);
  const out = new Float32Array(q.n * q.k);
  for (let r = 0; r < q.n; r++)
    for (let i = 0; i < q.k; i++) {
      const b = Math.floor(i / INT4_BLOCK);
      const byte = q.packed[(r * nb + b) * (INT4_BLOCK / 2) + ((i % INT4_BLOCK) >> 1)] as number;
      const v = i & 1 ? byte >> 4 : byte & 15;
      const zb = q.zeroPoints[r * zpRow + (b >> 1)] as number;
      const zp = b & 1 ? zb >> 4 : zb & 15;
      out[r * q.k + i] = (v - zp) * (q.scales[r * nb + b] as number);
    }
  return out;
}
