/** Shared helpers for the preprocess tests (not part of the library). */

import { readFileSync } from "node:fs";
import { PreprocessError } from "../errors";
import { InlineRunner, type MediaRunner } from "../pool";
import type { PrepareDeps, PrepareLimits } from "../prepare";
import { buildTokenizerFiles, createTokenizer, type Tokenizer } from "../tokenizer";
import { resolveFfmpegPath } from "../video/ffmpeg";

/** The golden folder shared by the project. */
export const GOLDEN = new URL("../../../../shared/golden/", import.meta.url);

export function goldenJson<T>(path: string): T {
  return JSON.parse(readFileSync(new URL(path, GOLDEN), "utf8")) as T;
}

export function goldenBytes(path: string): Uint8Array {
  return readFileSync(new URL(path, GOLDEN));
}

let tokenizer: Tokenizer | undefined;
/** The MiniCPM-V 2.6 tokenizer built from the tokenizer module's own files (no checkpoint needed). */
export function testTokenizer(): Tokenizer {
  if (!tokenizer) {
    const files = buildTokenizerFiles();
    tokenizer = createTokenizer(files.tokenizerJson, files.tokenizerConfig, "test");
  }
  return tokenizer;
}

export const TEST_LIMITS: PrepareLimits = {
  image: { maxBytes: 30 * 1024 * 1024, maxPixels: 40_000_000, maxDimension: 16384 },
  maxImagesPerRequest: 16,
  maxVideosPerRequest: 2,
  maxSliceNumsLimit: 16,
  maxVideoBytes: 50 * 1024 * 1024,
  maxVideoDurationSec: 600,
  maxVideoFrames: 64,
  maxVideoFps: 4,
  videoTimeoutMs: 60_000,
  maxPromptTokens: 32768,
};

/** Deps for prepare() with inline media processing unless `media` is given. */
export function testDeps(overrides: Partial<PrepareDeps> = {}, media: MediaRunner = new InlineRunner()): PrepareDeps {
  return {
    tokenizer: testTokenizer(),
    media,
    limits: TEST_LIMITS,
    defaults: { maxSliceNums: 9, useImageId: true, contextLength: 32768 },
    ffmpegPath: () => resolveFfmpegPath(undefined),
    ...overrides,
  };
}

/** The PreprocessError that `p` rejects with (fails the test when it resolves or throws something else). */
export async function failure(p: Promise<unknown>): Promise<PreprocessError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof PreprocessError) return e;
    throw e;
  }
  throw new Error("expected a PreprocessError, but the call succeeded");
}
