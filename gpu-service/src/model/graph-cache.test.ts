import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generateCheckpoint } from "../checkpoint/generator";
import { createModelRunner } from "./index";

const root = mkdtempSync(join(tmpdir(), "minicpmv-graph-cache-test-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const SMALL = {
  name: "cache-probe",
  seed: 1,
  llm: { hiddenSize: 128, numLayers: 1, numHeads: 2, numKvHeads: 1, intermediateSize: 64 },
  vision: { hiddenSize: 32, numLayers: 1, numHeads: 2, intermediateSize: 32 },
};

async function lastLogits(modelDir: string, cacheDir: string): Promise<Float32Array> {
  const runner = await createModelRunner({ modelDir, cacheDir, numBlocks: 4, blockSize: 16 });
  try {
    const [out] = await runner.step([{ tokenIds: [9, 8, 7], pastLen: 0, blockTable: [0], wantLogits: true }]);
    return out as Float32Array;
  } finally {
    await runner.dispose();
  }
}

describe("graph cache keyed by checkpoint content", () => {
  it("never serves one checkpoint's cached weights for another with the same config (another seed)", async () => {
    const a = join(root, "seed-1");
    const b = join(root, "seed-2");
    await generateCheckpoint({ config: SMALL, outDir: a });
    await generateCheckpoint({ config: SMALL, seed: 2, outDir: b });
    const cacheDir = join(root, "cache");
    const la = await lastLogits(a, cacheDir);
    const lb = await lastLogits(b, cacheDir);
    // Identical config.json and safetensors headers: only the weight bytes tell them apart
    // (one LLM entry and one vision entry per checkpoint).
    expect(readdirSync(join(cacheDir, "onnx"))).toHaveLength(4);
    expect(Array.from(lb)).not.toEqual(Array.from(la));
    // Reopening from the cache (digests remembered, graphs reused) gives the same logits again.
    expect(Array.from(await lastLogits(a, cacheDir))).toEqual(Array.from(la));
    expect(readdirSync(join(cacheDir, "onnx"))).toHaveLength(4);
  });
});
