import { parseArgs } from "node:util";
import { isPresetName, PRESETS, type PresetName } from "../gpu-service/src/checkpoint";
import { createModelRunner, type ModelRunner, type OrtModelRunner } from "../gpu-service/src/model";
import { presetCheckpoint } from "./common";

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "qwen2-0.5b" },
    weights: { type: "string", default: "f32" },
    ctx: { type: "string", default: "512" },
    threads: { type: "string", default: "2" },
    compare: { type: "string", default: "0" },
    steps: { type: "string", default: "8" },
  },
});
const presetArg = args.preset as string;
const weights = args.weights as "f32" | "int4" | "f16";
const ctx = Number(args.ctx);
if (!Number.isInteger(ctx) || ctx < 64 || ctx % 16 !== 0)
  throw new Error(`--ctx: must be a multiple of 16 >= 64, got ${args.ctx}`);
const threads = Number(args.threads);
const steps = Number(args.steps);
if (!isPresetName(presetArg)) throw new Error(`--preset: unknown preset ${presetArg}`);
const preset: PresetName = presetArg;
if (!["f32", "int4", "f16"].includes(weights)) throw new Error(`--weights: must be f32, int4 or f16, got ${weights}`);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const argmax = (x: Float32Array) => x.reduce((best, v, i) => (v > (x[best] as number) ? i : best), 0);

/** Memory bandwidth of a large typed-array copy (bytes read + written per second). */
function measureBandwidth(): number {
  const a = new Float64Array(64 * 1024 * 1024); // 512 MiB
  const b = new Float64Array(a.length);
  a.fill(1);
  b.set(a);
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    b.set(a);
    times.push(performance.now() - t0);
  }
  return (2 * a.byteLength) / (median(times) / 1000);
}

/** Bytes of LLM weights read per decode step (all linear layers + lm_head; the embedding table is only gathered). */
function weightBytesPerStep(r: ModelRunner, ffn: number): number {
  const { hiddenSize: h, numLayers, numKvHeads, headDim, vocabSize } = r.info;
  const qDim = h; // numHeads · headDim = hidden for these presets
  const perLayer = h * qDim * 2 + 2 * h * numKvHeads * headDim + 3 * h * ffn;
  const params = numLayers * perLayer + vocabSize * h;
  const bytesPerParam = weights === "int4" ? 0.5 + 4 / 32 + 0.5 / 32 : weights === "f16" ? 2 : 4;
  return params * bytesPerParam;
}

async function open(w: "f32" | "int4" | "f16", dir: string, numBlocks: number) {
  const t0 = performance.now();
  const r = (await createModelRunner({
    modelDir: dir,
    weights: w,
    numBlocks,
    intraOpThreads: threads,
  })) as OrtModelRunner;
  return { r, ms: performance.now() - t0 };
}

const dir = await presetCheckpoint(preset);
const bw = measureBandwidth();
const BS = 16;
const ctxBlocks = Math.ceil(ctx / BS);
const numBlocks = ctxBlocks + 16 * 2 + 64;
const { r, ms: openMs } = await open(weights, dir, numBlocks);
const ffn = PRESETS[preset].llm.intermediateSize;
console.log(
  `preset ${preset}, weights ${weights}, threads ${threads}, graphs ${r.stats.built ? `built in ${(r.stats.buildMs / 1000).toFixed(1)} s` : "from cache"}, open ${(openMs / 1000).toFixed(1)} s`,
);

// Vision: one 448x448 slice (1024 patches), median of 3 after a warm-up.
const rgb = Uint8Array.from({ length: 448 * 448 * 3 }, (_, i) => (i * 2654435761) >>> 24);
await r.encodeSlices([{ width: 448, height: 448, rgb }]);
const vis: number[] = [];
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  await r.encodeSlices([{ width: 448, height: 448, rgb }]);
  vis.push(performance.now() - t0);
}

// Prefill: one sequence of ctx tokens in one chunk (blocks 0..ctxBlocks-1), after a 64-token warm-up.
const V = r.info.vocabSize;
const prompt = Array.from({ length: ctx }, (_, i) => (i * 7919 + 13) % 150000);
const prefixTable = Array.from({ length: ctxBlocks }, (_, i) => i);
await r.step([{ tokenIds: prompt.slice(0, 64), pastLen: 0, blockTable: prefixTable, wantLogits: true }]);
const t0 = performance.now();
const [prefLogits] = await r.step([{ tokenIds: prompt, pastLen: 0, blockTable: prefixTable, wantLogits: true }]);
const prefillMs = performance.now() - t0;

// Decode at batch 1/4/16: every sequence shares the ctx-token prefix blocks and owns one fresh block.
const decode: Record<number, number> = {};
for (const B of [1, 4, 16]) {
  const tables = Array.from({ length: B }, (_, b) => [...prefixTable, ctxBlocks + b]);
  const run = (k: number) =>
    r.step(tables.map((t) => ({ tokenIds: [(k * 31 + 7) % V], pastLen: ctx + k, blockTable: t, wantLogits: true })));
  await run(0);
  const times: number[] = [];
  for (let k = 1; k <= steps && k < BS; k++) {
    const s0 = performance.now();
    await run(k);
    times.push(performance.now() - s0);
  }
  decode[B] = median(times);
}
const rssMb = process.resourceUsage().maxRSS / 1024;
const boundMs = (weightBytesPerStep(r, ffn) / bw) * 1000;

console.log(
  `memory bandwidth (copy): ${(bw / 1e9).toFixed(1)} GB/s; weights read per decode step: ${(weightBytesPerStep(r, ffn) / 1e6).toFixed(0)} MB -> bound ${boundMs.toFixed(1)} ms/step`,
);
console.log("| metric | value |\n| --- | --- |");
console.log(`| build (s) | ${r.stats.built ? (r.stats.buildMs / 1000).toFixed(1) : "cached"} |`);
console.log(`| load (s) | ${(r.stats.loadMs / 1000).toFixed(1)} |`);
console.log(`| vision ms / 448x448 slice | ${median(vis).toFixed(0)} |`);
console.log(`| prefill tok/s (T=${ctx}) | ${((ctx / prefillMs) * 1000).toFixed(0)} |`);
for (const B of [1, 4, 16]) {
  const ms = decode[B] as number;
  console.log(
    `| decode B=${B} ctx ${ctx}: ms/step, tok/s, bound fraction | ${ms.toFixed(1)}, ${((B / ms) * 1000).toFixed(1)}, ${(boundMs / ms).toFixed(2)} |`,
  );
}
console.log(`| peak RSS (MB) | ${rssMb.toFixed(0)} |`);

// int4 vs f32: top-1 agreement along the f32 greedy path.
const compareN = Number(args.compare);
if (compareN > 0) {
  await r.dispose();
  const f32 = (await open("f32", dir, numBlocks)).r;
  const q4 = (await open("int4", dir, numBlocks)).r;
  const start = prompt.slice(0, 32);
  const table = Array.from({ length: numBlocks }, (_, i) => i);
  let [a] = await f32.step([{ tokenIds: start, pastLen: 0, blockTable: table, wantLogits: true }]);
  let [b] = await q4.step([{ tokenIds: start, pastLen: 0, blockTable: table, wantLogits: true }]);
  let agree = 0;
  for (let i = 0; i < compareN; i++) {
    const ta = argmax(a as Float32Array);
    if (argmax(b as Float32Array) === ta) agree++;
    [a] = await f32.step([{ tokenIds: [ta], pastLen: 32 + i, blockTable: table, wantLogits: true }]);
    [b] = await q4.step([{ tokenIds: [ta], pastLen: 32 + i, blockTable: table, wantLogits: true }]);
  }
  console.log(
    `int4 vs f32 top-1 agreement along the f32 greedy path: ${agree}/${compareN} (${((100 * agree) / compareN).toFixed(1)}%)`,
  );
  await f32.dispose();
  await q4.dispose();
} else {
  await r.dispose();
}
void prefLogits;
