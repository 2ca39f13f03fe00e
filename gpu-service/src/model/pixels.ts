/** Normalises u8 RGB [H, W, 3] to float32 [3, H, W]: (u/255 − 0.5)/0.5 (§3.5). */
export function normalizePixels(
  rgb: Uint8Array,
  H: number,
  W: number,
  out = new Float32Array(3 * H * W),
): Float32Array {
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      for (let ch = 0; ch < 3; ch++)
        out[(ch * H + y) * W + x] = ((rgb[(y * W + x) * 3 + ch] as number) / 255 - 0.5) / 0.5;
  return out;
}
