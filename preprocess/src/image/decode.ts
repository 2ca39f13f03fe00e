/**
 * Encoded image bytes -> RGB u8, as the reference's `Image.open(...).convert("RGB")` (MINICPMV26.md §3.1):
 * alpha dropped (not composited), no EXIF rotation, no ICC transform, first frame of animations.
 *
 * The header is read first, so that decompression bombs are refused before any pixel is decoded.
 *
 * Two inputs need Pillow's own conversion (Pillow 9.4, which the goldens ran), since libvips converts them
 * differently: CMYK (JPEG, TIFF) is read as raw CMYK and turned into RGB with Pillow's `cmyk2rgb`, and
 * single-channel 16-bit greyscale (PNG, TIFF), which Pillow opens as mode I / I;16, is clipped to 0..255 per
 * value, not rescaled (so most such images come out nearly white, as they do in the reference).
 */

import sharp from "sharp";
import { invalid, overLimit, PreprocessError } from "../errors";
import type { RgbImage } from "./rgb-image";

/** Size limits for one image. */
export interface ImageLimits {
  /** Largest encoded input in bytes. */
  readonly maxBytes: number;
  /** Largest decoded image in pixels (width * height). */
  readonly maxPixels: number;
  /** Largest width or height in pixels. */
  readonly maxDimension: number;
}

/** Formats accepted (sharp's names); HEIF is accepted only with AV1 compression (AVIF). */
const FORMATS = new Set(["jpeg", "png", "webp", "gif", "heif", "tiff"]);

/** The decoded image and the format it came in. */
export interface DecodedImage extends RgbImage {
  readonly format: string;
}

/** Decodes one image; `field` names it in errors (e.g. "messages[0].parts[1].image"). */
export async function decodeImage(bytes: Uint8Array, limits: ImageLimits, field = "image"): Promise<DecodedImage> {
  if (bytes.length === 0) throw invalid(`${field}: empty image data`);
  if (bytes.length > limits.maxBytes) {
    throw overLimit(`${field}: ${bytes.length} encoded bytes is over the limit of ${limits.maxBytes}`);
  }
  const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let meta: sharp.Metadata;
  try {
    // Header only; the pixel limit is ours (below), not sharp's default.
    meta = await sharp(input, { limitInputPixels: false }).metadata();
  } catch (err) {
    const msg = (err as Error).message;
    if (/unsupported image format/i.test(msg)) {
      throw invalid(`${field}: unsupported or unrecognised image format (accepted: JPEG, PNG, WebP, GIF, AVIF, TIFF)`);
    }
    // NOTE: the decoder's own words (libvips internals) go to the log only.
    throw new PreprocessError("invalid_argument", `${field}: corrupt image`, msg);
  }
  const format = meta.format;
  if (!FORMATS.has(format) || (format === "heif" && meta.compression !== "av1")) {
    const name = format === "heif" ? `heif/${meta.compression ?? "unknown"}` : format;
    throw invalid(`${field}: image format ${name} is not supported (accepted: JPEG, PNG, WebP, GIF, AVIF, TIFF)`);
  }
  const width = meta.width;
  const height = meta.pageHeight ?? meta.height;
  if (!width || !height) throw invalid(`${field}: corrupt image (no dimensions in the header)`);
  if (width > limits.maxDimension || height > limits.maxDimension) {
    throw overLimit(`${field}: ${width}x${height} is over the limit of ${limits.maxDimension} px per side`);
  }
  if (width * height > limits.maxPixels) {
    throw overLimit(`${field}: ${width}x${height} = ${width * height} pixels is over the limit of ${limits.maxPixels}`);
  }
  let data: Buffer;
  let info: sharp.OutputInfo;
  const open = () =>
    sharp(input, {
      // Second line of defence against a header that lies about the size.
      limitInputPixels: limits.maxPixels,
      failOn: "truncated",
      ignoreIcc: true,
      pages: 1,
      page: 0,
    });
  try {
    if (meta.space === "cmyk") {
      const raw = await open()
        .pipelineColourspace("cmyk")
        .toColourspace("cmyk")
        .raw()
        .toBuffer({ resolveWithObject: true });
      ({ data, info } = { data: cmykToRgb(raw.data, raw.info.channels), info: { ...raw.info, channels: 3 } });
    } else if (meta.depth === "ushort" && meta.channels === 1) {
      const raw = await open().toColourspace("grey16").raw({ depth: "ushort" }).toBuffer({ resolveWithObject: true });
      ({ data, info } = { data: clipGrey16ToRgb(raw.data), info: { ...raw.info, channels: 3 } });
    } else {
      ({ data, info } = await open()
        .removeAlpha()
        .toColourspace("srgb")
        .raw({ depth: "uchar" })
        .toBuffer({ resolveWithObject: true }));
    }
  } catch (err) {
    throw new PreprocessError("invalid_argument", `${field}: corrupt image`, (err as Error).message);
  }
  if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
    throw new PreprocessError("internal", `${field}: decoder returned ${info.channels} channels for ${format}`);
  }
  return {
    width: info.width,
    height: info.height,
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    format,
  };
}

/** Pillow's `cmyk2rgb` (Convert.c): nk = 255 - K; channel = clip(nk - MULDIV255(C, nk)); extra channels dropped. */
export function cmykToRgb(cmyk: Uint8Array, channels: number): Buffer {
  const n = Math.floor(cmyk.length / channels);
  const out = Buffer.alloc(n * 3);
  for (let i = 0; i < n; i++) {
    const p = i * channels;
    const nk = 255 - (cmyk[p + 3] as number);
    for (let c = 0; c < 3; c++) {
      const t = (cmyk[p + c] as number) * nk + 128;
      out[i * 3 + c] = Math.max(0, nk - (((t >> 8) + t) >> 8));
    }
  }
  return out;
}

/** Pillow's I / I;16 -> RGB: each 16-bit grey value clipped to 255 and repeated in R, G and B. */
export function clipGrey16ToRgb(raw: Buffer): Buffer {
  const grey = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
  const out = Buffer.alloc(grey.length * 3);
  for (let i = 0; i < grey.length; i++) out.fill(Math.min(255, grey[i] as number), i * 3, i * 3 + 3);
  return out;
}
