#!/usr/bin/env -S node --import tsx
/**
 * Generates a deterministic MiniCPM-V 2.6-architecture checkpoint.
 *
 *   tsx gpu-service/src/checkpoint/cli.ts --preset tiny-a --out DIR [--seed N]
 *   tsx gpu-service/src/checkpoint/cli.ts --preset tiny-a --hidden 256 --layers 4 --out DIR
 *
 * Size flags override the preset: --hidden --layers --heads --kv-heads --intermediate
 * --vision-hidden --vision-layers --vision-heads --vision-intermediate, and --name.
 * Prints one JSON line with the output directory, parameter count, seconds and peak RSS.
 */

import { parseArgs } from "node:util";
import { generateCheckpoint, resolveTinyConfig, tinyTensors } from "./generator";
import { PRESETS, type TinyConfig, validateTinyConfig } from "./tiny-config";

const SIZE_FLAGS = {
  hidden: ["llm", "hiddenSize"],
  layers: ["llm", "numLayers"],
  heads: ["llm", "numHeads"],
  "kv-heads": ["llm", "numKvHeads"],
  intermediate: ["llm", "intermediateSize"],
  "vision-hidden": ["vision", "hiddenSize"],
  "vision-layers": ["vision", "numLayers"],
  "vision-heads": ["vision", "numHeads"],
  "vision-intermediate": ["vision", "intermediateSize"],
} as const;

function parseInteger(flag: string, value: string): number {
  if (!/^\d+$/.test(value)) throw new Error(`--${flag} must be a non-negative integer, got ${value}`);
  return Number(value);
}

async function main(argv: string[]): Promise<void> {
  const options = {
    preset: { type: "string", default: "tiny-a" },
    out: { type: "string" },
    seed: { type: "string" },
    name: { type: "string" },
    help: { type: "boolean", short: "h" },
    ...Object.fromEntries(Object.keys(SIZE_FLAGS).map((k) => [k, { type: "string" }])),
  } as const;
  const { values } = parseArgs({ args: argv, options, strict: true });
  const v = values as Record<string, string | boolean | undefined>;
  if (v.help || typeof v.out !== "string") {
    process.stdout.write(
      `usage: cli.ts --out DIR [--preset ${Object.keys(PRESETS).join("|")}] [--seed N] [--name NAME]\n` +
        `       [${Object.keys(SIZE_FLAGS)
          .map((f) => `--${f} N`)
          .join("] [")}]\n`,
    );
    process.exitCode = v.help ? 0 : 2;
    return;
  }
  const base = resolveTinyConfig(v.preset as string);
  const config: TinyConfig = { name: base.name, seed: base.seed, llm: { ...base.llm }, vision: { ...base.vision } };
  let custom = false;
  for (const [flag, [part, key]] of Object.entries(SIZE_FLAGS)) {
    const raw = v[flag];
    if (typeof raw === "string") {
      (config[part] as Record<string, number>)[key] = parseInteger(flag, raw);
      custom = true;
    }
  }
  if (typeof v.name === "string") config.name = v.name;
  else if (custom) config.name = "custom";
  if (typeof v.seed === "string") config.seed = parseInteger("seed", v.seed);
  validateTinyConfig(config);

  const params = tinyTensors(config).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  const t0 = performance.now();
  await generateCheckpoint({ config, outDir: v.out });
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(
    `${JSON.stringify({
      msg: "generated",
      out: v.out,
      name: config.name,
      seed: config.seed,
      parameters: params,
      bytes: params * 2,
      seconds: Number(seconds.toFixed(1)),
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    })}\n`,
  );
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exitCode = 1;
});
