/**
 * Adaptive slicing geometry and pixels, exactly as the reference image processor (MINICPMV26.md §3.3).
 *
 *   source W×H ──getSlicedGrid──► null ──► overview only (resized up or down to ≈448²)
 *                                 [cols, rows] ──► overview (shrunk to ≈448²)
 *                                              └─► refined = resize(source, refineSize) ──crop──► tiles, row-major
 *
 * NOTE: the reference cuts the image with a grid computed in float64 but writes the prompt with a grid
 * computed from float32 tensors (golden quirk 4), so both grids are exposed.
 */

import { logCorrectlyRounded } from "./correct-log";
import { resizeBicubic } from "./resize";
import { cropRgb, type RgbImage } from "./rgb-image";

/** `scale_resolution`: slices are about this many pixels on a side. */
export const SCALE_RESOLUTION = 448;
/** Vision patch size; every slice side is a multiple of it. */
export const PATCH_SIZE = 14;

/** A grid as [cols, rows]. */
export type Grid = readonly [cols: number, rows: number];
/** A size as [width, height]. */
export type Size = readonly [width: number, height: number];

/** Where and how an image is cut. */
export interface SliceGeometry {
  /** Grid used to cut the pixels (float64 arithmetic); null when the image is not sliced. */
  readonly gridSlicing: Grid | null;
  /** Grid used for the prompt placeholder (float32 arithmetic of the reference's tensors). */
  readonly gridPlaceholder: Grid | null;
  /** Size of the overview slice. */
  readonly overview: Size;
  /** Size the whole image is resized to before cutting tiles; null when not sliced. */
  readonly refine: Size | null;
  /** Size of each tile (all equal); null when not sliced. */
  readonly tile: Size | null;
}

/** A problem with the image's size that the reference cannot handle either. */
export class ImageGeometryError extends Error {
  override readonly name = "ImageGeometryError";
}

/** Python 3 `round()` on a float: ties to the even integer. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // ties toward +inf
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** `ensure_divide`: the nearest multiple of `p` (ties to even), at least `p`. */
export function ensureDivide(length: number, p: number): number {
  return Math.max(roundHalfEven(length / p) * p, p);
}

/** `find_best_resize`: scale to ≈448² area keeping aspect, then snap to the patch size. */
export function findBestResize(width: number, height: number, allowUpscale: boolean): Size {
  let w = width;
  let h = height;
  if (w * h > SCALE_RESOLUTION * SCALE_RESOLUTION || allowUpscale) {
    const r = w / h;
    h = Math.trunc(SCALE_RESOLUTION / Math.sqrt(r));
    w = Math.trunc(h * r);
  }
  return [ensureDivide(w, PATCH_SIZE), ensureDivide(h, PATCH_SIZE)];
}

/**
 * `get_sliced_grid`: the [cols, rows] grid whose aspect ratio is closest to the image's, or null when
 * the image fits in one slice. With `float32`, the ratio and the area quotient are computed the way
 * the reference's int64 tensors compute them (float32 division), which is what the prompt text uses.
 */
export function getSlicedGrid(width: number, height: number, maxSliceNums: number, float32 = false): Grid | null {
  const area = SCALE_RESOLUTION * SCALE_RESOLUTION;
  const f = Math.fround;
  const ratio = float32 ? f(f(width * height) / area) : (width * height) / area;
  const multiple = Math.min(Math.ceil(ratio), maxSliceNums);
  if (multiple <= 1) return null;
  const logRatio = logCorrectlyRounded(float32 ? f(f(width) / f(height)) : width / height);
  let best: Grid = [1, 1];
  let bestErr = Number.POSITIVE_INFINITY;
  for (const n of [multiple - 1, multiple, multiple + 1]) {
    if (n === 1 || n > maxSliceNums) continue;
    for (let m = 1; m <= n; m++) {
      if (n % m !== 0) continue;
      // Strict '<': only bitwise-equal errors keep the earlier grid (golden quirk 3).
      const err = Math.abs(logRatio - logCorrectlyRounded(m / (n / m)));
      if (err < bestErr) {
        best = [m, n / m];
        bestErr = err;
      }
    }
  }
  return best;
}

/** Every candidate grid of the float64 search with its error, in the reference's order (for diagnostics). */
export function gridCandidates(width: number, height: number, maxSliceNums: number): { grid: Grid; error: number }[] {
  const multiple = Math.min(Math.ceil((width * height) / (SCALE_RESOLUTION * SCALE_RESOLUTION)), maxSliceNums);
  if (multiple <= 1) return [];
  const logRatio = logCorrectlyRounded(width / height);
  const out: { grid: Grid; error: number }[] = [];
  for (const n of [multiple - 1, multiple, multiple + 1]) {
    if (n === 1 || n > maxSliceNums) continue;
    for (let m = 1; m <= n; m++) {
      if (n % m === 0) out.push({ grid: [m, n / m], error: Math.abs(logRatio - logCorrectlyRounded(m / (n / m))) });
    }
  }
  return out;
}

/** `get_refine_size`: the size the whole image is resized to before it is cut into `grid` tiles. */
export function getRefineSize(width: number, height: number, grid: Grid): Size {
  const [cols, rows] = grid;
  const rw = ensureDivide(width, cols);
  const rh = ensureDivide(height, rows);
  const [cw, ch] = findBestResize(rw / cols, rh / rows, true);
  return [cw * cols, ch * rows];
}

/** Checks that the reference can process a `width`x`height` image at all. */
export function checkSliceable(width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new ImageGeometryError(`image size must be positive integers, got ${width}x${height}`);
  }
  // NOTE: the reference guesses the channel layout from the (H, W, 3) array and reads a height of 1 or 3
  // as channels-first, then crashes (golden quirk 6). Reject those instead of inventing an answer.
  if (height === 1 || height === 3) {
    throw new ImageGeometryError(
      `image height ${height} px is not supported (heights of 1 and 3 px are ambiguous to the reference processor); got ${width}x${height}`,
    );
  }
}

/** The full slicing geometry of a `width`x`height` image with at most `maxSliceNums` slices. */
export function sliceGeometry(width: number, height: number, maxSliceNums: number): SliceGeometry {
  checkSliceable(width, height);
  if (!Number.isInteger(maxSliceNums) || maxSliceNums < 1) {
    throw new ImageGeometryError(`max_slice_nums must be a positive integer, got ${maxSliceNums}`);
  }
  const gridSlicing = getSlicedGrid(width, height, maxSliceNums);
  const gridPlaceholder = getSlicedGrid(width, height, maxSliceNums, true);
  if (gridSlicing === null) {
    return { gridSlicing, gridPlaceholder, overview: findBestResize(width, height, true), refine: null, tile: null };
  }
  const refine = getRefineSize(width, height, gridSlicing);
  const tile: Size = [refine[0] / gridSlicing[0], refine[1] / gridSlicing[1]];
  return { gridSlicing, gridPlaceholder, overview: findBestResize(width, height, false), refine, tile };
}

/** Number of slices (overview + tiles) of a geometry. */
export function sliceCount(g: SliceGeometry): number {
  return g.gridSlicing ? 1 + g.gridSlicing[0] * g.gridSlicing[1] : 1;
}

/** Cuts `img` into its overview and tiles (row-major), each resized with Pillow-exact BICUBIC. */
export function sliceImage(img: RgbImage, geometry: SliceGeometry): RgbImage[] {
  const overview = resizeBicubic(img, geometry.overview[0], geometry.overview[1]);
  const { gridSlicing: grid, refine, tile } = geometry;
  if (grid === null || refine === null || tile === null) return [overview];
  // NOTE: tiles come from the ORIGINAL image resized once, never from the overview.
  const refined = resizeBicubic(img, refine[0], refine[1]);
  const out = [overview];
  for (let r = 0; r < grid[1]; r++) {
    for (let c = 0; c < grid[0]; c++) out.push(cropRgb(refined, c * tile[0], r * tile[1], tile[0], tile[1]));
  }
  return out;
}
