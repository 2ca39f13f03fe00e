/**
 * Which frames of a video become images (MINICPMV26.md §7, the reference's video example):
 *
 *   step = round(avg_fps / fps)            (fps = 1: one frame per second)
 *   idx  = [0, step, 2·step, … < frameCount]
 *   if len(idx) > maxFrames: idx = [idx[trunc(k·gap + gap/2)] for k < maxFrames], gap = len(idx)/maxFrames
 */

import { roundHalfEven } from "../image/slice";

/** The reference's frame cap (`MAX_NUM_FRAMES`). */
export const DEFAULT_MAX_FRAMES = 64;

/** Indices of the frames to sample, ascending. */
export function sampleFrameIndices(
  frameCount: number,
  avgFps: number,
  fps = 1,
  maxFrames = DEFAULT_MAX_FRAMES,
): number[] {
  if (!(fps > 0) || !Number.isFinite(fps)) throw new RangeError(`fps must be a positive number, got ${fps}`);
  if (!Number.isInteger(maxFrames) || maxFrames < 1) {
    throw new RangeError(`max_frames must be a positive integer, got ${maxFrames}`);
  }
  if (frameCount <= 0) return [];
  // Python round() of avg_fps / fps, at least one frame apart.
  const step = Math.max(1, roundHalfEven(avgFps / fps));
  const idx: number[] = [];
  for (let i = 0; i < frameCount; i += step) idx.push(i);
  if (idx.length <= maxFrames) return idx;
  const gap = idx.length / maxFrames;
  return Array.from({ length: maxFrames }, (_, k) => idx[Math.trunc(k * gap + gap / 2)] as number);
}

/** Uniformly keeps at most `maxFrames` of `n` items (pre-sampled frames), with the same rule. */
export function uniformSubset(n: number, maxFrames: number): number[] {
  const all = Array.from({ length: n }, (_, i) => i);
  if (n <= maxFrames) return all;
  const gap = n / maxFrames;
  return Array.from({ length: maxFrames }, (_, k) => Math.trunc(k * gap + gap / 2));
}
