/**
 * Placeholder text for one image (MINICPMV26.md §3.7):
 *
 *   [<image_id>i</image_id>]<image><unk>×64</image>[<slice><unk>×64</slice>×cols, rows joined by "\n"]
 */

import type { Grid } from "./slice";

/** Resampler queries per slice: each slice becomes this many `<unk>` positions. */
export const QUERY_NUM = 64;

const UNK64 = "<unk>".repeat(QUERY_NUM);
const IMAGE = `<image>${UNK64}</image>`;
const SLICE = `<slice>${UNK64}</slice>`;

/** The placeholder string of one image; `grid` is the placeholder grid (null: unsliced). */
export function imagePlaceholder(grid: Grid | null, imageId: number, useImageId: boolean): string {
  let s = useImageId ? `<image_id>${imageId}</image_id>${IMAGE}` : IMAGE;
  if (grid) {
    const row = SLICE.repeat(grid[0]);
    s += Array.from({ length: grid[1] }, () => row).join("\n");
  }
  return s;
}
