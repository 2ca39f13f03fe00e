/** An 8-bit RGB image, row-major, 3 bytes per pixel, no padding. */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  /** width * height * 3 bytes. */
  readonly data: Uint8Array;
}

/** Copies the `w`x`h` rectangle at (`x`, `y`) out of `img`. */
export function cropRgb(img: RgbImage, x: number, y: number, w: number, h: number): RgbImage {
  if (x < 0 || y < 0 || x + w > img.width || y + h > img.height) {
    throw new RangeError(`crop ${w}x${h}+${x}+${y} is outside the ${img.width}x${img.height} image`);
  }
  const out = new Uint8Array(w * h * 3); // [h, w, 3]
  const rowBytes = w * 3;
  for (let r = 0; r < h; r++) {
    const from = ((y + r) * img.width + x) * 3;
    out.set(img.data.subarray(from, from + rowBytes), r * rowBytes);
  }
  return { width: w, height: h, data: out };
}
