/** Pieces the benchmarks share: preset checkpoints, prompt framing, a seeded generator. */
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  DEFAULT_CACHE_DIR,
  ensureTinyCheckpoint,
  generateCheckpoint,
  type PresetName,
} from "../gpu-service/src/checkpoint";

/** The preset's checkpoint directory under .cache/checkpoints, generated on first use. */
export async function presetCheckpoint(preset: PresetName): Promise<string> {
  if (preset === "tiny-a") return ensureTinyCheckpoint();
  const dir = join(DEFAULT_CACHE_DIR, "checkpoints", preset);
  if (!existsSync(join(dir, "config.json"))) {
    const t0 = performance.now();
    await generateCheckpoint({ config: preset, outDir: dir });
    console.log(`generated ${preset} checkpoint in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  return dir;
}

/** `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n` as token ids. */
export const SYSTEM_AND_USER = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198];
/** `<|im_end|>\n<|im_start|>assistant\n` as token ids. */
export const ASSISTANT_TURN = [151645, 198, 151644, 77091, 198];

/** A seeded linear congruential generator in [0, 1) (same numbers every run). */
export function lcg(seed = 1): () => number {
  let s = seed;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32;
  };
}

/** A prompt of `n` pseudo-random text tokens framed as one user turn. */
export function randomTextPrompt(n: number, rand: () => number): number[] {
  return [...SYSTEM_AND_USER, ...Array.from({ length: n }, () => 1000 + ((rand() * 100_000) | 0)), ...ASSISTANT_TURN];
}
