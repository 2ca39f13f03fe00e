/**
 * One image or video frame -> slices + content hash. Pure CPU work; runs inside the worker pool
 * (`pool.ts`) or inline.
 */

import { createHash } from "node:crypto";
import { invalid } from "./errors";
import { decodeImage, type ImageLimits } from "./image/decode";
import type { RgbImage } from "./image/rgb-image";
import { type Grid, ImageGeometryError, sliceGeometry, sliceImage } from "./image/slice";

/** A media task: encoded image bytes, or an already decoded RGB frame. */
export type MediaTask =
  | { kind: "encoded"; bytes: Uint8Array; maxSliceNums: number; limits: ImageLimits; field: string }
  | { kind: "rgb"; image: RgbImage; maxSliceNums: number; field: string };

/** Wall-clock milliseconds since the epoch, sub-millisecond and comparable across worker threads. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** When each stage of one task ran (epoch ms, {@link epochMs}); decode is absent for decoded frames. */
export interface MediaTimings {
  readonly decode?: readonly [start: number, end: number];
  readonly slice: readonly [start: number, end: number];
}

/** The slices of one image or frame. */
export interface SlicedMedia {
  readonly sourceWidth: number;
  readonly sourceHeight: number;
  /** Grid the pixels were cut with; null when unsliced. */
  readonly gridSlicing: Grid | null;
  /** Grid the prompt placeholder describes (differs only in rare float32 cases, golden quirk 4). */
  readonly gridPlaceholder: Grid | null;
  /** Overview first, then tiles row-major. */
  readonly slices: RgbImage[];
  /** sha256 over every slice's u32le width, u32le height and RGB bytes. */
  readonly contentHash: Uint8Array;
  /** Stage times, measured where the work ran (a worker thread), for the spans made on the main thread. */
  readonly timings: MediaTimings;
}

/** sha256 over each slice's u32le width, u32le height and RGB bytes, in order. */
export function contentHash(slices: readonly RgbImage[]): Uint8Array {
  const h = createHash("sha256");
  const dims = Buffer.alloc(8);
  for (const s of slices) {
    dims.writeUInt32LE(s.width, 0);
    dims.writeUInt32LE(s.height, 4);
    h.update(dims);
    h.update(s.data);
  }
  return new Uint8Array(h.digest());
}

/** Decodes (if needed), checks the size, slices and hashes one media item. */
export async function processMedia(task: MediaTask): Promise<SlicedMedia> {
  const t0 = epochMs();
  const image = task.kind === "encoded" ? await decodeImage(task.bytes, task.limits, task.field) : task.image;
  const t1 = epochMs();
  let geometry: ReturnType<typeof sliceGeometry>;
  try {
    geometry = sliceGeometry(image.width, image.height, task.maxSliceNums);
  } catch (err) {
    if (err instanceof ImageGeometryError) throw invalid(`${task.field}: ${err.message}`);
    throw err;
  }
  const slices = sliceImage(image, geometry);
  const hash = contentHash(slices);
  const t2 = epochMs();
  return {
    sourceWidth: image.width,
    sourceHeight: image.height,
    gridSlicing: geometry.gridSlicing,
    gridPlaceholder: geometry.gridPlaceholder,
    slices,
    contentHash: hash,
    timings: task.kind === "encoded" ? { decode: [t0, t1], slice: [t1, t2] } : { slice: [t1, t2] },
  };
}
