/**
 * Test support: a small MiniCPM-V 2.6 repository (a 3-row vocabulary, one LLM and one vision layer, two
 * shards), a few hundred KB, for download tests against the fake hub.
 */
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expectedTensors } from "../expected-tensors";
import { parseModelConfig } from "../model-config";
import { writeSafetensors } from "../safetensors";
import {
  buildConfigJson,
  buildGenerationConfigJson,
  buildPreprocessorConfigJson,
  type TinyConfig,
} from "../tiny-config";

/** The small architecture. */
export const MINI: TinyConfig = {
  name: "mini",
  seed: 1,
  llm: { hiddenSize: 128, numLayers: 1, numHeads: 4, numKvHeads: 2, intermediateSize: 32 },
  vision: { hiddenSize: 32, numLayers: 1, numHeads: 2, intermediateSize: 16 },
};
export const SHARD1 = "model-00001-of-00002.safetensors";
export const SHARD2 = "model-00002-of-00002.safetensors";

/** Writes the repository into `dir` (created), with the tokenizer files of the checkpoint in `tinyDir`. */
export async function writeMiniRepo(dir: string, tinyDir: string): Promise<void> {
  mkdirSync(dir);
  const configJson = {
    ...buildConfigJson(MINI),
    vocab_size: 3,
    vision_config: { ...(buildConfigJson(MINI).vision_config as object), image_size: 28 },
  };
  writeFileSync(join(dir, "config.json"), JSON.stringify(configJson));
  writeFileSync(join(dir, "preprocessor_config.json"), JSON.stringify(buildPreprocessorConfigJson()));
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify(buildGenerationConfigJson()));
  copyFileSync(join(tinyDir, "tokenizer.json"), join(dir, "tokenizer.json"));
  copyFileSync(join(tinyDir, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
  const cfg = parseModelConfig(configJson, null, { config: "config.json", preprocessor: "p.json" });
  const tensors = expectedTensors(cfg).map((s, i) => {
    const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    for (let k = 0; k < data.length; k++) data[k] = (((k * 7 + i * 3) % 33) - 16) / 8;
    return { name: s.name, dtype: "BF16" as const, shape: s.shape, data };
  });
  const half = Math.ceil(tensors.length / 2);
  await writeSafetensors(join(dir, SHARD1), tensors.slice(0, half));
  await writeSafetensors(join(dir, SHARD2), tensors.slice(half));
  const weightMap = Object.fromEntries(tensors.map((t, i) => [t.name, i < half ? SHARD1 : SHARD2]));
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
}
