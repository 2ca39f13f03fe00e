/**
 * The grammar's hook into sampling: before the sampler runs, every token the grammar forbids gets logit
 * -Infinity, so no sampling setting (temperature, top-k/p, logit_bias) can pick it.
 */

/**
 * Sets `logits[id] = -Infinity` for every id whose bit is clear in `mask` (xgrammar's layout: bit `id & 31` of
 * word `id >> 5`); ids past the mask's end (padding rows of the vocabulary) are forbidden too. In place.
 */
export function applyTokenMask(logits: Float32Array, mask: Int32Array): void {
  const n = logits.length;
  const words = Math.min(mask.length, Math.ceil(n / 32));
  for (let w = 0; w < words; w++) {
    const bits = mask[w] as number;
    if (bits === -1) continue; // all 32 allowed
    const base = w << 5;
    const end = Math.min(32, n - base);
    if (bits === 0) {
      logits.fill(Number.NEGATIVE_INFINITY, base, base + end);
      continue;
    }
    // Visit only the clear bits: lowest set bit of the complement, then drop it.
    let off = ~bits;
    if (end < 32) off &= (1 << end) - 1;
    while (off !== 0) {
      const b = 31 - Math.clz32(off & -off);
      logits[base + b] = Number.NEGATIVE_INFINITY;
      off &= off - 1;
    }
  }
  if (words * 32 < n) logits.fill(Number.NEGATIVE_INFINITY, words * 32);
}
