/**
 * Preprocessing benchmark (not a test): `npx tsx bench/preprocess.ts`.
 *
 * Prints ms per image (decode + Pillow-exact slicing + hash, one thread) for a 448x448 PNG-free JPEG,
 * a 1344x1344 JPEG and a 4000x3000 JPEG; images/s through a pool of 2 worker threads; and ms of
 * preprocessing per second of 720p video (ffmpeg decode + sampling at 1 frame/s + slicing with M=2).
 * With `--pillow` it also times the reference path (PIL decode + BICUBIC slicing, via /usr/bin/python3
 * with python3-pil) on the same files.
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeVideo, processMedia, resolveFfmpegPath, WorkerPool } from "@minicpmv/preprocess";
import sharp from "sharp";

const LIMITS = { maxBytes: 100e6, maxPixels: 100e6, maxDimension: 20000 };
const dir = mkdtempSync(join(tmpdir(), "bench-preprocess-"));

/** A photo-like test image: smooth gradients plus noise, so JPEG and resampling do real work. */
async function jpeg(width: number, height: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  let seed = 12345;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      const n = (seed >> 16) & 31;
      const i = (y * width + x) * 3;
      raw[i] = ((x * 255) / width + n) & 255;
      raw[i + 1] = ((y * 255) / height + n) & 255;
      raw[i + 2] = (128 + 100 * Math.sin(x / 37) * Math.cos(y / 23) + n) & 255;
    }
  }
  return await sharp(raw, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

async function timeIt(n: number, fn: () => Promise<unknown>): Promise<number> {
  await fn(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return (performance.now() - t0) / n;
}

const sizes: [number, number, number][] = [
  [448, 448, 20],
  [1344, 1344, 5],
  [4000, 3000, 3],
];
const files: Record<string, Buffer> = {};
console.log("single thread, decode + slice (max_slice_nums 9) + hash:");
for (const [w, h, n] of sizes) {
  const bytes = await jpeg(w, h);
  files[`${w}x${h}`] = bytes;
  writeFileSync(join(dir, `${w}x${h}.jpg`), bytes);
  const ms = await timeIt(n, () =>
    processMedia({ kind: "encoded", bytes, maxSliceNums: 9, limits: LIMITS, field: "bench" }),
  );
  console.log(
    `  ${`${w}x${h}`.padEnd(10)} JPEG ${(bytes.length / 1024).toFixed(0).padStart(5)} KiB: ${ms.toFixed(1)} ms/image`,
  );
}

const pool = new WorkerPool(2);
const big = files["1344x1344"] as Buffer;
const run = () => pool.run({ kind: "encoded", bytes: big, maxSliceNums: 9, limits: LIMITS, field: "bench" });
await Promise.all([run(), run()]); // warm-up (worker start, JIT)
const count = 24;
const t0 = performance.now();
await Promise.all(Array.from({ length: count }, run));
const secs = (performance.now() - t0) / 1000;
console.log(`pool of 2 workers, 1344x1344 JPEG: ${(count / secs).toFixed(2)} images/s (${count} images)`);
await pool.close();

const ffmpeg = resolveFfmpegPath(undefined);
const video = join(dir, "720p.mp4");
const seconds = 10;
execFileSync(ffmpeg, [
  ...["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", `testsrc2=duration=${seconds}:size=1280x720:rate=30`],
  ...["-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-y", video],
]);
const vbytes = new Uint8Array(readFileSync(video));
const vopts = {
  ffmpegPath: ffmpeg,
  fps: 1,
  maxFrames: 64,
  maxBytes: 1e9,
  maxDurationSec: 600,
  maxFramePixels: 1e8,
  timeoutMs: 120_000,
};
const tv = performance.now();
let frames = 0;
const tasks: Promise<unknown>[] = [];
for await (const f of decodeVideo(vbytes, vopts)) {
  frames++;
  tasks.push(processMedia({ kind: "rgb", image: f, maxSliceNums: 2, field: "bench" }));
}
await Promise.all(tasks);
const vms = performance.now() - tv;
console.log(
  `720p video, ${seconds} s at 30 fps, ${frames} frames sampled, inline slicing: ${(vms / seconds).toFixed(1)} ms per second of video`,
);

if (process.argv.includes("--pillow")) {
  const py = `
import sys, time, math
from PIL import Image
S, P = 448, 14
def ed(l, p): return max(round(l / p) * p, p)
def fbr(w, h, up):
    if w * h > S * S or up:
        r = w / h; h = int(S / math.sqrt(r)); w = int(h * r)
    return (ed(w, P), ed(h, P))
def grid(W, H, M=9):
    lr = math.log(W / H); mult = min(math.ceil(W * H / (S * S)), M)
    if mult <= 1: return None
    best, be = None, float("inf")
    for n in [mult - 1, mult, mult + 1]:
        if n == 1 or n > M: continue
        for m in range(1, n + 1):
            if n % m == 0:
                e = abs(lr - math.log(m / (n // m)))
                if e < be: best, be = [m, n // m], e
    return best
def work(path):
    img = Image.open(path).convert("RGB"); W, H = img.size; g = grid(W, H)
    if g is None: return [img.resize(fbr(W, H, True), Image.BICUBIC)]
    out = [img.resize(fbr(W, H, False), Image.BICUBIC)]
    rw, rh = ed(W, g[0]), ed(H, g[1]); cw, ch = fbr(rw / g[0], rh / g[1], True)
    ref = img.resize((cw * g[0], ch * g[1]), Image.BICUBIC)
    for r in range(g[1]):
        for c in range(g[0]): out.append(ref.crop((c * cw, r * ch, (c + 1) * cw, (r + 1) * ch)).tobytes())
    return out
for path, n in zip(sys.argv[1::2], sys.argv[2::2]):
    n = int(n); work(path); t = time.perf_counter()
    for _ in range(n): work(path)
    print(f"  {path.rsplit('/', 1)[-1]:14} {(time.perf_counter() - t) / n * 1000:.1f} ms/image")
`;
  console.log(
    `reference path (Pillow ${execFileSync("/usr/bin/python3", ["-c", "import PIL; print(PIL.__version__)"]).toString().trim()}, single thread):`,
  );
  const args = sizes.flatMap(([w, h, n]) => [join(dir, `${w}x${h}.jpg`), String(n)]);
  process.stdout.write(execFileSync("/usr/bin/python3", ["-c", py, ...args]));
}

rmSync(dir, { recursive: true, force: true });
