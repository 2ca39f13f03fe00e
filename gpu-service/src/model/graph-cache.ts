import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildLlmGraph, type LlmGraphOptions } from "./llm-graph";
import { buildVisionGraph } from "./vision-graph";
import type { WeightSource } from "./weights";

/** Bump when the built graphs change, so old cache entries are not reused. */
export const GRAPH_BUILDER_VERSION = 1;

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
  dir: string;
  visionPath: string;
  llmPath: string;
  /** false when the entry came from the cache */
  built: boolean;
  buildMs: number;
}

/** Cache key of the graphs for these weights and options. */
export function graphCacheKey(src: WeightSource, opts: LlmGraphOptions): string {
  const id = JSON.stringify({
    v: GRAPH_BUILDER_VERSION,
    content: src.contentHash,
    w: opts.weights,
    bs: opts.blockSize,
  });
  return createHash("sha256").update(id).digest("hex").slice(0, 24);
}

/**
 * Returns the vision and LLM graphs (ONNX + external data) for `src`, building them into
 * `<cacheDir>/onnx/<key>/` when absent. Builds go to a temporary folder renamed into place, so a crash
 * or a concurrent build never leaves a half-written entry.
 */
export async function ensureGraphs(src: WeightSource, opts: LlmGraphOptions, cacheDir: string): Promise<BuiltGraphs> {
  const key = graphCacheKey(src, opts);
  const root = join(cacheDir, "onnx");
  const dir = join(root, key);
  const paths = { dir, visionPath: join(dir, GRAPH_FILES.vision), llmPath: join(dir, GRAPH_FILES.llm) };
  if (existsSync(join(dir, GRAPH_FILES.manifest))) return { ...paths, built: false, buildMs: 0 };
  const t0 = performance.now();
  const tmp = join(root, `${key}.tmp-${process.pid}-${Date.now()}`);
  mkdirSync(tmp, { recursive: true });
  try {
    writeFileSync(join(tmp, GRAPH_FILES.vision), await buildVisionGraph(src, join(tmp, GRAPH_FILES.visionData)));
    writeFileSync(join(tmp, GRAPH_FILES.llm), await buildLlmGraph(src, opts, join(tmp, GRAPH_FILES.llmData)));
    const manifest = { version: GRAPH_BUILDER_VERSION, contentHash: src.contentHash, ...opts, config: src.config };
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
  return { ...paths, built: true, buildMs: performance.now() - t0 };
}

/** The manifest of a cache entry (the options and model shape it was built for). */
export function readManifest(dir: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, GRAPH_FILES.manifest), "utf8")) as Record<string, unknown>;
}
