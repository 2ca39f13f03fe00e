/** Preprocessing defaults read from a checkpoint directory (preprocessor_config.json, config.json). */

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { QUERY_NUM } from "./image/placeholder";
import { PATCH_SIZE, SCALE_RESOLUTION } from "./image/slice";

/** What the checkpoint says about preprocessing. */
export interface ModelDefaults {
  /** `max_slice_nums` (reference 9). */
  readonly maxSliceNums: number;
  /** `use_image_id` (reference true). */
  readonly useImageId: boolean;
  /** `max_position_embeddings` of the LLM: no prompt may be longer. */
  readonly contextLength: number;
}

/** The reference's values, used for files that are absent. */
export const REFERENCE_DEFAULTS: ModelDefaults = { maxSliceNums: 9, useImageId: true, contextLength: 32768 };

async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${path}: invalid JSON (${(err as Error).message})`);
  }
}

/**
 * Reads the defaults; a missing file falls back to REFERENCE_DEFAULTS (`missing` lists it), a file
 * whose geometry differs from what this service implements (448 px, 14 px patches, 64 queries) is an error.
 */
export async function loadModelDefaults(modelDir: string): Promise<ModelDefaults & { missing: string[] }> {
  const missing: string[] = [];
  const pre = await readJson(join(modelDir, "preprocessor_config.json"));
  const cfg = await readJson(join(modelDir, "config.json"));
  if (!pre) missing.push("preprocessor_config.json");
  if (!cfg) missing.push("config.json");
  const expect = (obj: Record<string, unknown> | undefined, key: string, value: number, file: string) => {
    if (obj && obj[key] !== undefined && obj[key] !== value) {
      throw new Error(`${join(modelDir, file)}: ${key} is ${String(obj[key])}, this service supports only ${value}`);
    }
  };
  expect(pre, "scale_resolution", SCALE_RESOLUTION, "preprocessor_config.json");
  expect(pre, "patch_size", PATCH_SIZE, "preprocessor_config.json");
  expect(pre, "image_feature_size", QUERY_NUM, "preprocessor_config.json");
  expect(cfg, "query_num", QUERY_NUM, "config.json");
  const num = (v: unknown, d: number) => (typeof v === "number" && Number.isInteger(v) && v > 0 ? v : d);
  return {
    maxSliceNums: num(pre?.max_slice_nums, REFERENCE_DEFAULTS.maxSliceNums),
    useImageId: typeof pre?.use_image_id === "boolean" ? pre.use_image_id : REFERENCE_DEFAULTS.useImageId,
    contextLength: num(cfg?.max_position_embeddings, REFERENCE_DEFAULTS.contextLength),
    missing,
  };
}
