import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { failure } from "../testing/fixtures";
import { cmykToRgb, decodeImage } from "./decode";

const LIMITS = { maxBytes: 1e7, maxPixels: 1e7, maxDimension: 10000 };
const W = 37;
const H = 23;
const rgb = Buffer.from(Array.from({ length: W * H * 3 }, (_, i) => (i * 31 + (i >> 5)) & 255));
const source = () => sharp(rgb, { raw: { width: W, height: H, channels: 3 } });

describe("decodeImage", () => {
  it("decodes lossless formats to the exact RGB bytes", async () => {
    for (const [name, bytes] of [
      ["png", await source().png().toBuffer()],
      ["webp", await source().webp({ lossless: true }).toBuffer()],
      ["tiff", await source().tiff({ compression: "lzw" }).toBuffer()],
    ] as const) {
      const img = await decodeImage(bytes, LIMITS);
      expect([name, img.format, img.width, img.height]).toEqual([name, name, W, H]);
      expect(Buffer.from(img.data).equals(rgb)).toBe(true);
    }
  });

  it("decodes JPEG, GIF and AVIF to RGB of the right size", async () => {
    for (const [fmt, bytes] of [
      ["jpeg", await source().jpeg().toBuffer()],
      ["gif", await source().gif().toBuffer()],
      ["heif", await source().avif().toBuffer()],
    ] as const) {
      const img = await decodeImage(bytes, LIMITS);
      expect([img.format, img.width, img.height, img.data.length]).toEqual([fmt, W, H, W * H * 3]);
    }
  });

  it("drops alpha without compositing, like PIL convert('RGB')", async () => {
    const rgba = Buffer.from([10, 20, 30, 0, 200, 100, 50, 128]);
    const png = await sharp(rgba, { raw: { width: 2, height: 1, channels: 4 } })
      .png()
      .toBuffer();
    const img = await decodeImage(png, LIMITS);
    expect([...img.data]).toEqual([10, 20, 30, 200, 100, 50]);
  });

  it("expands grey to RGB and ignores EXIF orientation", async () => {
    const grey = await sharp(Buffer.from([0, 128, 255]), { raw: { width: 3, height: 1, channels: 1 } })
      .png()
      .toBuffer();
    expect([...(await decodeImage(grey, LIMITS)).data]).toEqual([0, 0, 0, 128, 128, 128, 255, 255, 255]);
    const rotated = await source().jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const img = await decodeImage(rotated, LIMITS);
    expect([img.width, img.height]).toEqual([W, H]); // not turned into H x W
  });

  it("converts CMYK and 16-bit grey exactly as Pillow 9.4's convert('RGB') does", async () => {
    // testdata/ holds images written by Pillow 9.4 (the goldens' version); the digests are of
    // `Image.open(f).convert("RGB").tobytes()` there. A CMYK JPEG as Pillow saves it, and a 16-bit grey PNG,
    // which Pillow opens as mode I and clips to 255 (libvips would colour-manage / rescale both).
    const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
    const cases = [
      ["cmyk-37x23.jpg", "ef9eb77586ea0acc39b7cb88173eceb8875e335f812b714003a9e13e86abbd4b"],
      ["grey16-37x23.png", "93c97bfbbee7e46def6212e63a7749d475d66169fc51a5ddb1ad2bb77c977ec6"],
    ] as const;
    for (const [file, want] of cases) {
      const img = await decodeImage(readFileSync(join(import.meta.dirname, "testdata", file)), LIMITS);
      expect([file, img.width, img.height, sha(img.data)]).toEqual([file, W, H, want]);
    }
    // Pillow's cmyk2rgb with black: nk = 255 - K, channel = nk - MULDIV255(C, nk).
    expect([...cmykToRgb(new Uint8Array([0, 128, 255, 100, 50, 50, 50, 255]), 4)]).toEqual([155, 77, 0, 0, 0, 0]);
  });

  it("enforces the byte limit and rejects empty input", async () => {
    const png = await source().png().toBuffer();
    const e = await failure(decodeImage(png, { ...LIMITS, maxBytes: 100 }, "img"));
    expect([e.kind, e.message]).toEqual([
      "invalid_argument",
      `img: ${png.length} encoded bytes is over the limit of 100`,
    ]);
    expect((await failure(decodeImage(new Uint8Array(0), LIMITS, "img"))).message).toBe("img: empty image data");
  });
});
