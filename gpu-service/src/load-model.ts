/**
 * Loads the model like `createModelRunner` (model/index.ts), reporting each phase as it advances:
 *
 *   checkpoint validation   bytes of the safetensors files checked (names, shapes, dtypes; content sha256)
 *   graph build             bytes of checkpoint tensors read into the vision and LLM graphs (converted, and
 *                           with WEIGHTS=int4 quantized, on the way); "from cache" when the built graphs are reused
 *   session load            the graphs opened on the execution provider, the KV pool allocated
 */
import { join } from "node:path";
import { DEFAULT_CACHE_DIR, loadCheckpoint } from "./checkpoint";
import { createRunnerFromWeights, type ModelOptions, type ModelRunner } from "./model";
import type { ProgressUpdate } from "./progress";

/** Phase names, as shown. */
export const PHASES = {
  validate: "checkpoint validation",
  build: "graph build",
  sessions: "session load",
} as const;

/** Loads the checkpoint in `opts.modelDir` and opens its graphs, calling `onProgress` along the way. */
export async function loadModelRunner(
  opts: ModelOptions,
  onProgress: (u: ProgressUpdate) => void = () => {},
): Promise<ModelRunner> {
  const cacheDir = opts.cacheDir ?? DEFAULT_CACHE_DIR;
  const phase = (
    key: keyof typeof PHASES,
    done: number,
    total: number | null,
    unit: ProgressUpdate["unit"],
    end?: string,
  ) =>
    onProgress({
      id: `phase:${key}`,
      label: PHASES[key],
      done,
      total,
      unit,
      ...(end !== undefined ? { finished: true, note: end } : {}),
    });
  let validated = 0;
  const ckpt = await loadCheckpoint(opts.modelDir, {
    hashMemo: join(cacheDir, "checkpoint-digests.json"),
    onProgress: (done, total) => {
      validated = total;
      phase("validate", done, total, "bytes");
    },
  });
  phase("validate", validated, validated, "bytes", "ok");
  const { modelDir, ...rest } = opts;
  const build = opts.weights === "int4" ? "graph build + int4 quantization" : PHASES.build;
  const sizes = new Map(
    ckpt.tensorNames().map((n) => {
      const { dtype, shape } = ckpt.tensorInfo(n);
      return [n, shape.reduce((a, b) => a * b, 1) * (dtype === "F32" ? 4 : 2)];
    }),
  );
  const totalBytes = [...sizes.values()].reduce((a, b) => a + b, 0);
  let read = 0;
  let built = false;
  const report = (end?: string) =>
    onProgress({
      id: "phase:build",
      label: build,
      done: Math.min(read, totalBytes),
      total: totalBytes,
      unit: "bytes",
      ...(end !== undefined ? { finished: true, note: end } : {}),
    });
  // Reading a tensor is where the builders spend their time: count reads as progress of the build.
  const counting = {
    ...ckpt,
    async readTensor(name: string) {
      const t = await ckpt.readTensor(name);
      read += sizes.get(name) ?? 0;
      built = true;
      report();
      return t;
    },
  };
  report();
  try {
    const runner = await createRunnerFromWeights(counting, {
      ...rest,
      cacheDir,
      modelName: ckpt.config.modelName || (modelDir.split(/[\\/]/).filter(Boolean).pop() ?? "minicpmv"),
    });
    report(built ? "built" : "from cache");
    phase("sessions", 1, 1, "steps", `${opts.executionProvider ?? "cpu"}, ${runner.info.numBlocks} KV blocks`);
    return runner;
  } finally {
    await ckpt.close();
  }
}
