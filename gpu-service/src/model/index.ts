import { join } from "node:path";
import { DEFAULT_CACHE_DIR, loadCheckpoint } from "../checkpoint";
import { createRunnerFromWeights, type ModelOptions, type ModelRunner } from "./runner";

export type { ModelInfo, ModelOptions, ModelRunner, SeqStep, SliceInput } from "./runner";
export { createRunnerFromWeights, OrtModelRunner } from "./runner";

/**
 * Loads the checkpoint in `opts.modelDir`, builds (or reuses from `<cacheDir>/onnx/<key>/`, default
 * `<repo>/.cache`) the vision and LLM graphs, and opens them on the chosen execution provider.
 * Fails at start when the provider is unavailable. The checkpoint files are closed once the graphs exist.
 */
export async function createModelRunner(opts: ModelOptions): Promise<ModelRunner> {
  const cacheDir = opts.cacheDir ?? DEFAULT_CACHE_DIR;
  const ckpt = await loadCheckpoint(opts.modelDir, { hashMemo: join(cacheDir, "checkpoint-digests.json") });
  const { modelDir, ...rest } = opts;
  try {
    return await createRunnerFromWeights(ckpt, {
      ...rest,
      cacheDir,
      modelName: ckpt.config.modelName || (modelDir.split(/[\\/]/).filter(Boolean).pop() ?? "minicpmv"),
    });
  } finally {
    await ckpt.close();
  }
}
