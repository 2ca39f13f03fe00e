/**
 * Video bytes -> sampled RGB frames with ffmpeg (MINICPMV26.md §7).
 *
 *   bytes ─stdin─► ffmpeg -c copy -f null   (demux only: frame count, fps, size, duration)
 *         ─stdin─► ffmpeg -vf select=… -f rawvideo -pix_fmt rgb24 ─stdout─► frames, one at a time
 *
 * The input goes through a pipe; only containers that cannot be read from a pipe (an MP4 whose index
 * sits at the end) fall back to a private temporary file, removed afterwards.
 */

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { invalid, overLimit, PreprocessError, throwIfAborted } from "../errors";
import type { RgbImage } from "../image/rgb-image";
import { ACCEPTED_CONTAINERS, demuxerArgs, sniffContainer, type VideoDemuxer } from "./container";
import { startFfmpeg } from "./ffmpeg";
import { sampleFrameIndices } from "./sample";

/** What the demuxer says about the first video stream. */
export interface VideoInfo {
  readonly width: number;
  readonly height: number;
  /** Average frame rate (frames per second). */
  readonly avgFps: number;
  /** Number of video frames (packets) in the stream. */
  readonly frameCount: number;
  /** Duration in seconds: the larger of the container's and frameCount / avgFps. */
  readonly durationSec: number;
}

/** Limits and settings for decoding one video. */
export interface VideoOptions {
  readonly ffmpegPath: string;
  /** Frames sampled per second of video (1 in the reference). */
  readonly fps: number;
  /** Most frames sampled from one video (64 in the reference). */
  readonly maxFrames: number;
  readonly maxBytes: number;
  readonly maxDurationSec: number;
  /** Largest frame in pixels. */
  readonly maxFramePixels: number;
  /** Kills ffmpeg after this long (each of the two passes). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** Names the video in errors. */
  readonly field?: string;
}

/** One sampled frame. */
export interface VideoFrame extends RgbImage {
  /** Index of the frame in the stream. */
  readonly index: number;
}

function parseRate(s: string): number {
  return s.endsWith("k") ? Number.parseFloat(s) * 1000 : Number.parseFloat(s);
}

/** Parses the stderr of `ffmpeg -i … -map 0:v:0 -c copy -f null -`. */
export function parseProbe(stderr: string, field: string): VideoInfo {
  const stream = /Stream #\d+:\d+.*?: Video: (.*)/.exec(stderr);
  if (!stream) throw invalid(`${field}: no video stream found`);
  const line = stream[1] as string;
  const size = /(?:^|[\s,])(\d{1,5})x(\d{1,5})(?:[\s,[]|$)/.exec(line);
  if (!size) throw invalid(`${field}: cannot read the frame size of the video stream`);
  const fpsMatch = /([\d.]+k?) fps/.exec(line) ?? /([\d.]+k?) tbr/.exec(line);
  const avgFps = fpsMatch ? parseRate(fpsMatch[1] as string) : Number.NaN;
  if (!(avgFps > 0)) throw invalid(`${field}: cannot read the frame rate of the video stream`);
  // The last progress line of the copy pass counts the frames.
  const frames = [...stderr.matchAll(/frame=\s*(\d+)/g)].at(-1);
  const frameCount = frames ? Number(frames[1]) : 0;
  const dur = /Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)/.exec(stderr);
  // NOTE: a container read from a pipe may report only part of its duration (fragmented MP4), so the
  // counted frames decide when they say more.
  const containerSec = dur ? Number(dur[1]) * 3600 + Number(dur[2]) * 60 + Number(dur[3]) : 0;
  const durationSec = Math.max(containerSec, frameCount / avgFps);
  return { width: Number(size[1]), height: Number(size[2]), avgFps, frameCount, durationSec };
}

type Input = ({ kind: "pipe"; bytes: Uint8Array } | { kind: "file"; path: string }) & { demuxer: VideoDemuxer };

function inputArgs(input: Input): string[] {
  return ["-noautorotate", ...demuxerArgs(input.demuxer, input)];
}

async function probe(input: Input, opts: VideoOptions, field: string): Promise<VideoInfo> {
  const proc = startFfmpeg({
    ffmpeg: opts.ffmpegPath,
    args: [...inputArgs(input), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
    input: input.kind === "pipe" ? input.bytes : undefined,
    signal: opts.signal,
    timeoutMs: opts.timeoutMs,
  });
  proc.stdout.resume();
  return parseProbe(await proc.done, field);
}

/**
 * Probes `bytes`, samples frame indices and yields the sampled frames as ffmpeg produces them.
 * Breaking out of the loop, an abort or a timeout kills ffmpeg; the generator returns only after
 * the process has exited.
 */
export async function* decodeVideo(bytes: Uint8Array, opts: VideoOptions): AsyncGenerator<VideoFrame, VideoInfo> {
  const field = opts.field ?? "video";
  if (bytes.length === 0) throw invalid(`${field}: empty video data`);
  if (bytes.length > opts.maxBytes) {
    throw overLimit(`${field}: ${bytes.length} bytes is over the limit of ${opts.maxBytes}`);
  }
  // The container is decided from the bytes; anything else (playlists, manifests, scripts that name other
  // files or URLs) never reaches ffmpeg.
  const demuxer = sniffContainer(bytes);
  if (!demuxer) throw invalid(`${field}: not a supported video container (accepted: ${ACCEPTED_CONTAINERS})`);
  let input: Input = { kind: "pipe", bytes, demuxer };
  let tmpDir: string | undefined;
  try {
    let info: VideoInfo | undefined;
    try {
      info = await probe(input, opts, field);
    } catch (err) {
      if (!(err instanceof PreprocessError) || err.kind !== "invalid_argument") throw err;
    }
    if (!info || info.frameCount === 0) {
      // Some containers need a seekable input (an MP4 with the moov atom at the end reads as empty
      // or fails from a pipe): retry from a private temporary file.
      tmpDir = await mkdtemp(join(tmpdir(), "preprocess-video-"));
      const path = join(tmpDir, "input");
      await writeFile(path, bytes, { mode: 0o600 });
      input = { kind: "file", path, demuxer };
      info = await probe(input, opts, field);
    }
    if (info.durationSec > opts.maxDurationSec) {
      throw overLimit(
        `${field}: video is ${info.durationSec.toFixed(1)} s long, over the limit of ${opts.maxDurationSec} s`,
      );
    }
    if (info.width * info.height > opts.maxFramePixels) {
      throw overLimit(
        `${field}: frames of ${info.width}x${info.height} are over the limit of ${opts.maxFramePixels} pixels`,
      );
    }
    if (info.frameCount === 0) throw invalid(`${field}: the video has no frames`);
    const indices = sampleFrameIndices(info.frameCount, info.avgFps, opts.fps, opts.maxFrames);
    yield* frames(input, info, indices, opts, field);
    return info;
  } finally {
    if (tmpDir) await rm(tmpDir, { recursive: true, force: true });
  }
}

async function* frames(
  input: Input,
  info: VideoInfo,
  indices: readonly number[],
  opts: VideoOptions,
  field: string,
): AsyncGenerator<VideoFrame> {
  throwIfAborted(opts.signal);
  const select = `select='${indices.map((i) => `eq(n\\,${i})`).join("+")}'`;
  const proc = startFfmpeg({
    ffmpeg: opts.ffmpegPath,
    args: [
      ...inputArgs(input),
      ...["-map", "0:v:0", "-an", "-sn", "-vf", select, "-vsync", "0"],
      ...["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
    ],
    input: input.kind === "pipe" ? input.bytes : undefined,
    signal: opts.signal,
    timeoutMs: opts.timeoutMs,
  });
  const frameBytes = info.width * info.height * 3;
  try {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let n = 0;
    for await (const chunk of proc.stdout as AsyncIterable<Buffer>) {
      pending.push(chunk);
      pendingBytes += chunk.length;
      while (pendingBytes >= frameBytes) {
        const all = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingBytes);
        const data = new Uint8Array(frameBytes); // [height, width, 3]
        data.set(all.subarray(0, frameBytes));
        const rest = all.subarray(frameBytes);
        pending = rest.length ? [rest] : [];
        pendingBytes = rest.length;
        if (n >= indices.length) throw invalid(`${field}: ffmpeg produced more frames than were sampled`);
        // Frames already buffered must not outlive a cancel.
        throwIfAborted(opts.signal);
        yield { index: indices[n] as number, width: info.width, height: info.height, data };
        n++;
      }
    }
    await proc.done;
    if (n === 0) throw invalid(`${field}: none of the sampled frames could be decoded`);
  } finally {
    await proc.stop();
  }
}
