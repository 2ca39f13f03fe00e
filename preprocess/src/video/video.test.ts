import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PreprocessError } from "../errors";
import { InlineRunner, type MediaRunner } from "../pool";
import { prepare } from "../prepare";
import { failure, testDeps } from "../testing/fixtures";
import { decodeVideo, type VideoOptions } from "./decode-video";
import { liveFfmpegProcesses, resolveFfmpegPath } from "./ffmpeg";
import { sampleFrameIndices, uniformSubset } from "./sample";

const ffmpeg = resolveFfmpegPath(undefined);
let dir: string;
let fragmented: Uint8Array; // readable from a pipe
let moovAtEnd: Uint8Array; // needs the temp-file fallback

function ffmpegChildren(): string[] {
  try {
    return execFileSync("ps", ["-o", "comm=", "--ppid", String(process.pid)], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.includes("ffmpeg"));
  } catch {
    return []; // ps exits 1 when there are no children
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "video-test-"));
  const make = (name: string, extra: string[]) => {
    const path = join(dir, name);
    execFileSync(ffmpeg, [
      ...["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=5:size=160x120:rate=10"],
      ...["-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "10", ...extra, "-y", path],
    ]);
    return new Uint8Array(readFileSync(path));
  };
  fragmented = make("frag.mp4", ["-movflags", "frag_keyframe+empty_moov", "-f", "mp4"]);
  moovAtEnd = make("plain.mp4", []);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const opts = (over: Partial<VideoOptions> = {}): VideoOptions => ({
  ffmpegPath: ffmpeg,
  fps: 1,
  maxFrames: 64,
  maxBytes: 10_000_000,
  maxDurationSec: 60,
  maxFramePixels: 10_000_000,
  timeoutMs: 60_000,
  ...over,
});

async function collect(bytes: Uint8Array, o: VideoOptions) {
  const frames: { index: number; width: number; height: number; hash: string }[] = [];
  for await (const f of decodeVideo(bytes, o)) {
    frames.push({
      index: f.index,
      width: f.width,
      height: f.height,
      hash: createHash("sha256").update(f.data).digest("hex"),
    });
  }
  return frames;
}

describe("frame sampling (§7)", () => {
  it("takes one frame per second and caps uniformly", () => {
    expect(sampleFrameIndices(50, 10)).toEqual([0, 10, 20, 30, 40]);
    expect(sampleFrameIndices(50, 10, 2)).toEqual([0, 5, 10, 15, 20, 25, 30, 35, 40, 45]);
    expect(sampleFrameIndices(50, 10, 2, 3)).toEqual([5, 25, 40]); // gap 10/3 -> candidates 1, 5, 8
    // 200 s at 30 fps: 200 candidates, gap 3.125 -> candidates 1, 4, 7, 10, 14, 17 ...
    const idx = sampleFrameIndices(6000, 30);
    expect(idx).toHaveLength(64);
    expect(idx.slice(0, 6)).toEqual([30, 120, 210, 300, 420, 510]);
    expect(sampleFrameIndices(10, 2.5)).toEqual([0, 2, 4, 6, 8]); // Python round(2.5) = 2
    expect(sampleFrameIndices(0, 30)).toEqual([]);
    expect(uniformSubset(5, 2)).toEqual([1, 3]);
    expect(() => sampleFrameIndices(10, 10, 0)).toThrow(/fps must be a positive number/);
  });
});

describe("decodeVideo with ffmpeg", () => {
  it("samples 1 frame/s from a 5 s, 10 fps video read from a pipe", async () => {
    const frames = await collect(fragmented, opts());
    expect(frames.map((f) => f.index)).toEqual([0, 10, 20, 30, 40]);
    expect(frames.every((f) => f.width === 160 && f.height === 120)).toBe(true);
    expect(new Set(frames.map((f) => f.hash)).size).toBe(5);
    expect(liveFfmpegProcesses()).toBe(0);
  });

  it("honours fps and max_frames, and reads an MP4 whose index is at the end", async () => {
    const a = await collect(moovAtEnd, opts({ fps: 2, maxFrames: 3 }));
    expect(a.map((f) => f.index)).toEqual([5, 25, 40]);
    const b = await collect(fragmented, opts({ fps: 2, maxFrames: 3 }));
    expect(b.map((f) => f.hash)).toEqual(a.map((f) => f.hash));
  });

  it("kills ffmpeg when cancelled and leaves no child behind", async () => {
    const ac = new AbortController();
    const seen: number[] = [];
    const err = await (async () => {
      for await (const f of decodeVideo(fragmented, opts({ fps: 10, signal: ac.signal }))) {
        seen.push(f.index);
        ac.abort();
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PreprocessError);
    expect((err as PreprocessError).kind).toBe("cancelled");
    expect(seen).toEqual([0]);
    expect(liveFfmpegProcesses()).toBe(0);
    expect(ffmpegChildren()).toEqual([]);
  });

  it("kills ffmpeg when the consumer stops early", async () => {
    for await (const f of decodeVideo(fragmented, opts({ fps: 10 }))) {
      expect(f.index).toBe(0);
      break;
    }
    expect(liveFfmpegProcesses()).toBe(0);
    expect(ffmpegChildren()).toEqual([]);
  });

  it("times out", async () => {
    const err = await collect(fragmented, opts({ timeoutMs: 1 })).catch((e: unknown) => e);
    expect((err as PreprocessError).kind).toBe("deadline_exceeded");
    expect((err as PreprocessError).message).toBe("video decoding took longer than 1 ms");
    expect(liveFfmpegProcesses()).toBe(0);
  });

  it("rejects a video that is too long, too big, or not a video", async () => {
    const long = await failure(collect(fragmented, opts({ maxDurationSec: 2 })));
    expect([long.kind, long.message]).toEqual([
      "invalid_argument",
      "video: video is 5.0 s long, over the limit of 2 s",
    ]);
    const big = await failure(collect(fragmented, opts({ maxBytes: 100 })));
    expect(big.kind).toBe("invalid_argument");
    expect(big.message).toMatch(/^video: \d+ bytes is over the limit of 100$/);
    const junk = await failure(collect(new Uint8Array(5000).fill(7), opts()));
    expect(junk.kind).toBe("invalid_argument");
    expect(junk.message).toBe(
      "video: not a supported video container (accepted: MP4/MOV, Matroska/WebM, AVI, MPEG-TS or GIF)",
    );
    expect(liveFfmpegProcesses()).toBe(0);
  });

  it("says clearly when there is no ffmpeg", () => {
    let err: unknown;
    try {
      resolveFfmpegPath("/nonexistent/ffmpeg", ["no-such-ffmpeg-package"]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PreprocessError);
    expect((err as PreprocessError).kind).toBe("unavailable");
    expect((err as PreprocessError).message).toBe(
      "ffmpeg not found; tried FFMPEG_PATH=/nonexistent/ffmpeg (not an executable file), ffmpeg on PATH (none), no-such-ffmpeg-package (not installed)",
    );
  });
});

describe("videos through prepare()", () => {
  it("turns each sampled frame into an image without ids, max 2 slices", async () => {
    const out = await prepare(
      {
        messages: [
          {
            role: "user",
            parts: [
              { type: "video", source: { data: fragmented } },
              { type: "text", text: "?" },
            ],
          },
        ],
        addGenerationPrompt: true,
      },
      testDeps(),
    );
    expect(out.media).toHaveLength(5);
    expect(out.media.every((m) => m.modality === "video" && m.slices.length === 1)).toBe(true);
    expect(out.promptText).not.toContain("<image_id>");
    expect(out.tokenCounts.video).toBe(5 * 66);
    expect(out.tokenCounts.image).toBe(0);
  });

  it("fails clearly without ffmpeg and when cancelled", async () => {
    const req = {
      messages: [{ role: "user" as const, parts: [{ type: "video" as const, source: { data: fragmented } }] }],
      addGenerationPrompt: true,
    };
    const noFfmpeg = await failure(prepare(req, testDeps({ ffmpegPath: () => resolveFfmpegPath("/nope", []) })));
    expect([noFfmpeg.kind, noFfmpeg.message]).toEqual([
      "unavailable",
      "ffmpeg not found; tried FFMPEG_PATH=/nope (not an executable file), ffmpeg on PATH (none)",
    ]);
    // Cancel while the video is being decoded: the first sampled frame handed to the media runner aborts the
    // request (deterministic, unlike a timer that a fast machine outruns).
    const ac = new AbortController();
    const inline = new InlineRunner();
    const abortingRunner: MediaRunner = {
      run: (task, signal) => {
        ac.abort();
        return inline.run(task, signal);
      },
      close: () => inline.close(),
    };
    const cancelled = await failure(prepare(req, testDeps({}, abortingRunner), ac.signal));
    expect(cancelled.kind).toBe("cancelled");
    expect(liveFfmpegProcesses()).toBe(0);
    expect(ffmpegChildren()).toEqual([]);
  });
});
