/**
 * Element types of checkpoint tensors and their conversions to and from float32.
 *
 * NOTE: all typed-array views assume a little-endian host (x86-64, arm64), which is also the byte
 * order of safetensors data.
 */

/** The dtypes a checkpoint tensor may have. */
export type Dtype = "BF16" | "F16" | "F32";

export const SUPPORTED_DTYPES: readonly Dtype[] = ["BF16", "F16", "F32"];

/** Bytes per element of every safetensors dtype (to validate offsets of tensors we do not load). */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

export function isSupportedDtype(d: string): d is Dtype {
  return d === "BF16" || d === "F16" || d === "F32";
}

let f16Table: Float32Array | undefined;

/** float32 value of every float16 bit pattern (65,536 entries, built once). */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) table[h] = sign * frac * 2 ** -24;
    else if (exp === 31) table[h] = frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
    else table[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  f16Table = table;
  return table;
}

/**
 * Widens `count` elements of raw little-endian `src` bytes (starting at byte 0) into `dst` at `dstOffset`.
 * `src` must start at an even byte offset of its buffer for the 16-bit types.
 */
export function widenToF32(dtype: Dtype, src: Uint8Array, dst: Float32Array, dstOffset: number, count: number): void {
  switch (dtype) {
    case "F32":
      dst.set(new Float32Array(src.buffer, src.byteOffset, count), dstOffset);
      return;
    case "BF16": {
      const s = new Uint16Array(src.buffer, src.byteOffset, count);
      // bf16 is the upper half of a float32: [count] u16 -> [count] u32 bit patterns
      const d = new Uint32Array(dst.buffer, dst.byteOffset + dstOffset * 4, count);
      for (let i = 0; i < count; i++) d[i] = (s[i] as number) << 16;
      return;
    }
    case "F16": {
      const s = new Uint16Array(src.buffer, src.byteOffset, count);
      const table = halfTable();
      for (let i = 0; i < count; i++) dst[dstOffset + i] = table[s[i] as number] as number;
      return;
    }
  }
}

/** Rounds float32 bit patterns to bfloat16, round half to even (NaN stays NaN). */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Rounds a float32 value to float16 bits, round half to even, overflow to infinity. */
export function f32ToF16Bits(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/**
 * Encodes float32 values as raw little-endian bytes of `dtype` (BF16/F16 rounded half to even).
 */
export function encodeF32(dtype: Dtype, values: Float32Array): Uint8Array {
  if (dtype === "F32")
    return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint16Array(values.length);
  if (dtype === "BF16") {
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < values.length; i++) out[i] = f32BitsToBf16(bits[i] as number);
  } else {
    for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i] as number);
  }
  return new Uint8Array(out.buffer);
}
