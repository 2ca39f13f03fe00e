import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { failure } from "../testing/fixtures";
import { sniffContainer } from "./container";
import { decodeVideo, type VideoOptions } from "./decode-video";
import { liveFfmpegProcesses, resolveFfmpegPath } from "./ffmpeg";

const ffmpeg = resolveFfmpegPath(undefined);
let dir: string;
let server: Server;
let hits = 0;
let port = 0;

const opts: VideoOptions = {
  ffmpegPath: ffmpeg,
  fps: 1,
  maxFrames: 8,
  maxBytes: 10_000_000,
  maxDurationSec: 60,
  maxFramePixels: 10_000_000,
  timeoutMs: 60_000,
  field: "messages[0].parts[0].video",
};

function encode(name: string, args: string[]): Uint8Array {
  const path = join(dir, name);
  execFileSync(ffmpeg, [
    ...["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=2:size=64x48:rate=5"],
    ...args,
    ...["-y", path],
  ]);
  return new Uint8Array(readFileSync(path));
}

async function frames(bytes: Uint8Array): Promise<number> {
  let n = 0;
  for await (const _ of decodeVideo(bytes, opts)) n++;
  return n;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "container-test-"));
  server = createServer((_req, res) => {
    hits++;
    res.end("#EXTM3U\n");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await new Promise((r) => server.close(r));
});

describe("container allow-list (magic bytes)", () => {
  it("decodes each accepted container with its own demuxer", async () => {
    const cases: [string, string[], string][] = [
      ["a.mp4", ["-pix_fmt", "yuv420p", "-c:v", "libx264"], "mov"],
      ["a.mkv", ["-c:v", "mpeg4"], "matroska"],
      ["a.avi", ["-c:v", "mpeg4"], "avi"],
      ["a.ts", ["-c:v", "mpeg2video"], "mpegts"],
      ["a.gif", [], "gif"],
    ];
    for (const [name, args, demuxer] of cases) {
      const bytes = encode(name, args);
      expect(sniffContainer(bytes), name).toBe(demuxer);
      expect(await frames(bytes), name).toBe(2);
    }
    expect(liveFfmpegProcesses()).toBe(0);
  });

  it("refuses playlists, manifests and scripts that reference other files or URLs, reading nothing", async () => {
    const secret = join(dir, "secret.txt");
    writeFileSync(secret, "do not read me");
    const hls = `#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://${secret}\n#EXTINF:1,\nhttp://127.0.0.1:${port}/seg.ts\n#EXT-X-ENDLIST\n`;
    const dash = `<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"><Period><AdaptationSet><Representation id="1" bandwidth="1"><BaseURL>http://127.0.0.1:${port}/v.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>`;
    const concat = `ffconcat version 1.0\nfile 'http://127.0.0.1:${port}/a.mp4'\nfile '${secret}'\n`;
    const sdp = `v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video ${port} RTP/AVP 96\n`;
    for (const text of [hls, dash, concat, sdp, "/etc/passwd", `http://127.0.0.1:${port}/x.mp4`]) {
      const e = await failure(frames(new TextEncoder().encode(text.padEnd(400, "\n"))));
      expect([e.kind, e.message]).toEqual([
        "invalid_argument",
        "messages[0].parts[0].video: not a supported video container (accepted: MP4/MOV, Matroska/WebM, AVI, MPEG-TS or GIF)",
      ]);
    }
    expect(hits).toBe(0);
    expect(liveFfmpegProcesses()).toBe(0);
  });

  it("keeps an MP4 from following references to other files", async () => {
    // An MP4 whose bytes start like one but carry an HLS playlist: the mov demuxer, told so, reads no URL.
    const fake = new Uint8Array([
      ...[0, 0, 0, 16],
      ...new TextEncoder().encode("ftypisom"),
      ...[0, 0, 0, 0],
      ...new TextEncoder().encode(`#EXTM3U\nhttp://127.0.0.1:${port}/x.ts\n`),
    ]);
    const e = await failure(frames(fake));
    expect(e.kind).toBe("invalid_argument");
    expect(e.message).not.toMatch(/ffmpeg|\/tmp|pipe:/);
    expect(hits).toBe(0);
  });
});

describe("ffmpeg binary choice", () => {
  it("prefers FFMPEG_PATH, then ffmpeg on PATH, then the npm fallback", () => {
    const bin = join(dir, "bin");
    mkdirSync(bin);
    const sys = join(bin, "ffmpeg");
    writeFileSync(sys, "#!/bin/sh\necho 'ffmpeg version 9.9-test'\n");
    chmodSync(sys, 0o755);
    expect(resolveFfmpegPath(undefined, [], `/nonexistent:${bin}`)).toBe(sys);
    expect(resolveFfmpegPath(ffmpeg, [], bin)).toBe(ffmpeg);
    expect(resolveFfmpegPath(undefined, undefined, "/nonexistent")).toBe(ffmpeg);
  });
});
