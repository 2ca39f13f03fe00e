/**
 * Pillow-exact BICUBIC resize of 8-bit RGB images (MINICPMV26.md §3.4).
 *
 * Mirrors Pillow's `libImaging/Resample.c`: float64 filter weights per output pixel, normalised and
 * converted to 22-bit fixed point, then two separable integer passes (horizontal first, uint8 between
 * the passes). sharp's own resize differs by up to 102 levels, so it is only used to decode.
 */

import type { RgbImage } from "./rgb-image";

const PRECISION_BITS = 22; // 32 - 8 - 2, as in Pillow
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);
const SUPPORT = 2; // bicubic

function bicubic(x: number): number {
  const a = -0.5;
  const t = x < 0 ? -x : x;
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/** Fixed-point weights for one axis: output index o reads `count[o]` inputs from `first[o]`. */
interface Coeffs {
  readonly first: Int32Array;
  readonly count: Int32Array;
  /** [outSize, ksize] fixed-point weights. */
  readonly weights: Int32Array;
  readonly ksize: number;
}

function precomputeCoeffs(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  // NOTE: Pillow multiplies by 1/filterscale instead of dividing; that matters in the last bit.
  const ss = 1 / filterscale;
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    let lo = Math.trunc(center - support + 0.5);
    if (lo < 0) lo = 0;
    let hi = Math.trunc(center + support + 0.5);
    if (hi > inSize) hi = inSize;
    const n = hi - lo;
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const v = bicubic((k + lo - center + 0.5) * ss);
      w[k] = v;
      sum += v;
    }
    const base = o * ksize;
    for (let k = 0; k < n; k++) {
      const v = sum !== 0 ? w[k] / sum : w[k];
      weights[base + k] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    first[o] = lo;
    count[o] = n;
  }
  return { first, count, weights, ksize };
}

function clip8(acc: number): number {
  if (acc >= ONE * 256) return 255;
  if (acc <= 0) return 0;
  return acc >> PRECISION_BITS;
}

function horizontal(src: RgbImage, outW: number, c: Coeffs): RgbImage {
  const { width: inW, height: h, data } = src;
  const out = new Uint8Array(outW * h * 3); // [h, outW, 3]
  const { first, count, weights, ksize } = c;
  for (let y = 0; y < h; y++) {
    const row = y * inW * 3;
    const orow = y * outW * 3;
    for (let o = 0; o < outW; o++) {
      let r = HALF;
      let g = HALF;
      let b = HALF;
      const n = count[o];
      const kb = o * ksize;
      let p = row + first[o] * 3;
      for (let k = 0; k < n; k++, p += 3) {
        const wk = weights[kb + k];
        // NOTE: int32 sums as in Pillow; |sum| < 1.2 · 255 · 2^22 < 2^31 for normalised bicubic weights.
        r = (r + Math.imul(data[p], wk)) | 0;
        g = (g + Math.imul(data[p + 1], wk)) | 0;
        b = (b + Math.imul(data[p + 2], wk)) | 0;
      }
      const q = orow + o * 3;
      out[q] = clip8(r);
      out[q + 1] = clip8(g);
      out[q + 2] = clip8(b);
    }
  }
  return { width: outW, height: h, data: out };
}

function vertical(src: RgbImage, outH: number, c: Coeffs): RgbImage {
  const { width: w, data } = src;
  const rowBytes = w * 3;
  const out = new Uint8Array(outH * rowBytes); // [outH, w, 3]
  const { first, count, weights, ksize } = c;
  for (let o = 0; o < outH; o++) {
    const n = count[o];
    const kb = o * ksize;
    const base = first[o] * rowBytes;
    const orow = o * rowBytes;
    for (let i = 0; i < rowBytes; i++) {
      let acc = HALF;
      let p = base + i;
      for (let k = 0; k < n; k++, p += rowBytes) acc = (acc + Math.imul(data[p], weights[kb + k])) | 0;
      out[orow + i] = clip8(acc);
    }
  }
  return { width: w, height: outH, data: out };
}

/** Resizes `img` to `width`x`height` exactly as Pillow's `Image.resize(size, Image.BICUBIC)` on RGB. */
export function resizeBicubic(img: RgbImage, width: number, height: number): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`resize target must be positive integers, got ${width}x${height}`);
  }
  if (img.data.length !== img.width * img.height * 3) {
    throw new RangeError(`image data has ${img.data.length} bytes, expected ${img.width * img.height * 3}`);
  }
  let cur = img;
  if (width !== img.width) cur = horizontal(cur, width, precomputeCoeffs(img.width, width));
  if (height !== img.height) cur = vertical(cur, height, precomputeCoeffs(img.height, height));
  return cur === img ? { width, height, data: img.data.slice() } : cur;
}
