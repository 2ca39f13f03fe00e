import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { decodeImage } from "./decode";
import { resizeBicubic } from "./resize";
import { sliceGeometry, sliceImage } from "./slice";

const GOLDEN = new URL("../../../../shared/golden/", import.meta.url);
const LIMITS = { maxBytes: 50e6, maxPixels: 50e6, maxDimension: 20_000 };
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface PixelCase {
  name: string;
  png: string;
  width: number;
  height: number;
  sha256_rgb_u8: string;
  max_slice_nums: number;
  grid: [number, number] | null;
  slices: { index: number; width: number; height: number; sha256_rgb_u8: string }[];
}

const images = (JSON.parse(readFileSync(new URL("preprocess/images.json", GOLDEN), "utf8")) as { images: PixelCase[] })
  .images;

describe("Pillow-exact slices match golden/preprocess/images.json", () => {
  it("has the public pixel cases", () => {
    expect(images.map((i) => i.name)).toEqual([
      "img_097x131",
      "img_500x300",
      "img_640x480",
      "img_1000x700",
      "frame_0_640x360",
    ]);
  });
  for (const c of images) {
    it(c.name, async () => {
      const img = await decodeImage(readFileSync(new URL(c.png, GOLDEN)), LIMITS);
      expect([img.width, img.height]).toEqual([c.width, c.height]);
      expect(sha(img.data)).toBe(c.sha256_rgb_u8);
      const g = sliceGeometry(img.width, img.height, c.max_slice_nums);
      expect(g.gridSlicing).toEqual(c.grid);
      const slices = sliceImage(img, g);
      expect(slices.map((s) => [s.width, s.height])).toEqual(c.slices.map((s) => [s.width, s.height]));
      expect(slices.map((s) => sha(s.data))).toEqual(c.slices.map((s) => s.sha256_rgb_u8));
    });
  }
});

/** Noise from the same LCG as the Python script that produced the hashes below. */
function lcgBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = Number((BigInt(s) * 1103515245n + 12345n) & 0x7fffffffn);
    out[i] = (s >> 16) & 255;
  }
  return out;
}

// [w, h, outW, outH, seed, sha256 of Pillow 9.4.0 `Image.resize((outW, outH), Image.BICUBIC)`] on noise:
// up- and downscaling, extreme ratios and 1-pixel sides.
const PILLOW_CASES: [number, number, number, number, number, string][] = [
  [97, 131, 126, 168, 1, "f0c8233d76ea2f5c98a7223e1b584cbe612934257907ef3dfd2ad8e84a9c9c8a"],
  [640, 480, 1, 1, 2, "4ac5fe6b86e178f61c2c1a2cebfa78030693871895474d5309424d9ee4f1cf3f"],
  [1, 50, 300, 7, 3, "080219375bd51aed628d994ae6b34553f555c1663d56feff81226a3b38ef0058"],
  [300, 1, 2, 90, 4, "7a45b64dc7d8180b096689a34c3ed39a3f03346ff8886a09791a3ce2cbcb3201"],
  [1000, 20, 37, 33, 5, "23a75e7998ea5335ffa35298673e0cc8e7da6fa2745c42312bfd6f46d307bc51"],
  [33, 700, 700, 33, 6, "b6a7a72d8ceb998d78fd631641a749794bf4901e50c8a69e23f5e3e857498a61"],
  [257, 129, 1000, 999, 7, "db19ce3624f93847fb78b56d97afbea2ec66c8b41643c20fe223e827a95c3b30"],
  [800, 600, 23, 601, 8, "dfe6408e563231ebc58ccb994527ca51854f934c2ea1cb2467f813031fec49a5"],
];

describe("resizeBicubic", () => {
  it("matches Pillow 9.4.0 BICUBIC byte for byte on noise", () => {
    for (const [w, h, ow, oh, seed, hash] of PILLOW_CASES) {
      const out = resizeBicubic({ width: w, height: h, data: lcgBytes(w * h * 3, seed) }, ow, oh);
      expect([w, h, ow, oh, sha(out.data)]).toEqual([w, h, ow, oh, hash]);
    }
  });

  it("keeps an image of the same size byte for byte", () => {
    const data = Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => (i * 37) % 256);
    expect(resizeBicubic({ width: 4, height: 3, data }, 4, 3).data).toEqual(data);
  });
  it("reproduces a constant colour exactly when scaling up and down", () => {
    const data = new Uint8Array(10 * 7 * 3).fill(200);
    for (const [w, h] of [
      [23, 5],
      [3, 19],
    ] as const) {
      const out = resizeBicubic({ width: 10, height: 7, data }, w, h);
      expect(out.data.length).toBe(w * h * 3);
      expect(out.data.every((v) => v === 200)).toBe(true);
    }
  });
  it("rejects bad target sizes", () => {
    expect(() => resizeBicubic({ width: 1, height: 1, data: new Uint8Array(3) }, 0, 5)).toThrow(/positive integers/);
  });
});
