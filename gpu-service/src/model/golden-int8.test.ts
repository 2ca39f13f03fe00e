import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTinyCheckpoint } from "../checkpoint";
import { GOLDEN_IMAGE_CASES, goldenDistance } from "./golden-check";
import { createModelRunner, type ModelRunner } from "./index";

// VISION_PRECISION=int8 on the tiny-a goldens (float32 PyTorch outputs). Measured (bench/vision.ts): embedding
// cosine >= 0.99996, first-step logit difference <= 0.086, top-1 kept in all four cases (golden top-1 margins
// 0.155-1.7). Bounds, with headroom for other CPUs' int8 kernels:
// - cosine >= 0.9995: 15x the observed 1 - cos (3.4e-5); f32 gives 1 - cos < 1e-9.
// - logits <= 0.2: 2.3x the observed worst, and still below the 0.42 logit shift of the known one-bucket
//   position-id error (golden/README.md quirk 1), so a real vision bug cannot hide under it. f32 keeps 1e-3.
// - top-1: the greedy answer must not change on any case.
const COSINE_FLOOR = 0.9995;
const LOGIT_BOUND = 0.2;

describe("tiny-a goldens with the int8 vision tower", () => {
  let runner: ModelRunner;
  beforeAll(async () => {
    runner = await createModelRunner({
      modelDir: await ensureTinyCheckpoint(),
      numBlocks: 64,
      intraOpThreads: 2,
      visionPrecision: "int8",
    });
  });
  afterAll(async () => runner?.dispose());

  it.each(GOLDEN_IMAGE_CASES)("%s: embeddings, first-step logits and top-1 within the int8 bounds", async (name) => {
    const d = await goldenDistance(runner, name);
    expect(d.slices).toBeGreaterThan(0);
    expect(d.embedCosineMin).toBeGreaterThanOrEqual(COSINE_FLOOR);
    // int8 really ran: f32 lands within 1e-5 of the goldens, int8 visibly does not
    expect(d.embedMaxAbsDiff).toBeGreaterThan(1e-4);
    expect(d.logitMaxAbsDiff).toBeLessThanOrEqual(LOGIT_BOUND);
    expect(d.top1).toBe(d.goldenTop1);
  });
});
