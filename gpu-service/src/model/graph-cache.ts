import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildLlmGraph, type LlmGraphOptions } from "./llm-graph";
import { buildVisionGraph, type VisionPrecision } from "./vision-graph";
import type { WeightSource } from "./weights";

/** Bump when the built LLM graph changes, so old cache entries are not reused (2: fused qkv and gate/up). */
export const GRAPH_BUILDER_VERSION = 2;
/** Bump when the built vision graph changes (2: MultiHeadAttention, fused qkv, int8 mode). */
export const VISION_BUILDER_VERSION = 2;

/** Options of both graphs (each part of its own graph's cache key). */
export interface GraphOptions extends LlmGraphOptions {
  visionPrecision: VisionPrecision;
}

/** File names inside one cache entry `<cacheDir>/onnx/<key>/`. */
export const GRAPH_FILES = {
  vision: "vision.onnx",
  visionData: "vision.weights",
  llm: "llm.onnx",
  llmData: "llm.weights",
  /** written last: marks a complete entry */
  manifest: "build.json",
} as const;

export interface BuiltGraphs {
  /** the LLM graph's entry */
  dir: string;
  /** the vision graph's entry */
  visionDir: string;
  visionPath: string;
  llmPath: string;
  /** false when the entry came from the cache */
  built: boolean;
  buildMs: number;
}

/** Cache key of the LLM graph for these weights and options. */
export function graphCacheKey(src: WeightSource, opts: LlmGraphOptions): string {
  const id = JSON.stringify({
    v: GRAPH_BUILDER_VERSION,
    content: src.contentHash,
    w: opts.weights,
    bs: opts.blockSize,
  });
  return createHash("sha256").update(id).digest("hex").slice(0, 24);
}

/** Cache key of the vision graph (separate from the LLM's: switching one never rebuilds the other). */
export function visionCacheKey(src: WeightSource, precision: VisionPrecision): string {
  const id = JSON.stringify({ vision: VISION_BUILDER_VERSION, content: src.contentHash, precision });
  return `vision-${createHash("sha256").update(id).digest("hex").slice(0, 24)}`;
}

/**
 * Returns the vision and LLM graphs (ONNX + external data) for `src`, building each into its own
 * `<cacheDir>/onnx/<key>/` when absent. Builds go to a temporary folder renamed into place, so a crash
 * or a concurrent build never leaves a half-written entry.
 */
export async function ensureGraphs(src: WeightSource, opts: GraphOptions, cacheDir: string): Promise<BuiltGraphs> {
  const t0 = performance.now();
  const llmOpts: LlmGraphOptions = { weights: opts.weights, blockSize: opts.blockSize };
  const llm = await ensureLlmGraph(src, llmOpts, cacheDir);
  const vision = await ensureVisionGraph(src, opts.visionPrecision, cacheDir);
  const built = llm.built || vision.built;
  return {
    dir: llm.dir,
    visionDir: vision.dir,
    visionPath: vision.path,
    llmPath: llm.path,
    built,
    buildMs: built ? performance.now() - t0 : 0,
  };
}

/** The LLM graph's cache entry, built when absent. */
export async function ensureLlmGraph(src: WeightSource, opts: LlmGraphOptions, cacheDir: string) {
  const e = await ensureEntry(
    join(cacheDir, "onnx"),
    graphCacheKey(src, opts),
    { ...opts, config: src.config },
    src,
    (tmp) =>
      buildLlmGraph(src, opts, join(tmp, GRAPH_FILES.llmData)).then((b) =>
        writeFileSync(join(tmp, GRAPH_FILES.llm), b),
      ),
  );
  return { ...e, path: join(e.dir, GRAPH_FILES.llm) };
}

/** The vision graph's cache entry, built when absent. */
export async function ensureVisionGraph(src: WeightSource, precision: VisionPrecision, cacheDir: string) {
  const e = await ensureEntry(
    join(cacheDir, "onnx"),
    visionCacheKey(src, precision),
    { visionPrecision: precision, config: src.config },
    src,
    (tmp) =>
      buildVisionGraph(src, join(tmp, GRAPH_FILES.visionData), precision).then((b) =>
        writeFileSync(join(tmp, GRAPH_FILES.vision), b),
      ),
  );
  return { ...e, path: join(e.dir, GRAPH_FILES.vision) };
}

async function ensureEntry(
  root: string,
  key: string,
  manifestExtra: Record<string, unknown>,
  src: WeightSource,
  build: (tmp: string) => Promise<void>,
): Promise<{ dir: string; built: boolean }> {
  const dir = join(root, key);
  if (existsSync(join(dir, GRAPH_FILES.manifest))) return { dir, built: false };
  const tmp = join(root, `${key}.tmp-${process.pid}-${Date.now()}`);
  mkdirSync(tmp, { recursive: true });
  try {
    await build(tmp);
    const manifest = {
      llmVersion: GRAPH_BUILDER_VERSION,
      visionVersion: VISION_BUILDER_VERSION,
      contentHash: src.contentHash,
      ...manifestExtra,
    };
    writeFileSync(join(tmp, GRAPH_FILES.manifest), JSON.stringify(manifest, null, 1));
    try {
      renameSync(tmp, dir);
    } catch (e) {
      // Another process finished the same entry first: keep theirs.
      if (!existsSync(join(dir, GRAPH_FILES.manifest))) throw e;
      rmSync(tmp, { recursive: true, force: true });
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return { dir, built: true };
}

/** The manifest of a cache entry (the options and model shape it was built for). */
export function readManifest(dir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, GRAPH_FILES.manifest), "utf8")) as Record<string, unknown>;
}
