import { execFileSync } from "node:child_process";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { isPresetName, PRESETS, type PresetName } from "../gpu-service/src/checkpoint";
import { createModelRunner, type ModelRunner, type OrtModelRunner } from "../gpu-service/src/model";
import { ortStreamBandwidth, plainReadBandwidth } from "./bandwidth";
import { presetCheckpoint } from "./common";

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "qwen2-0.5b" },
    weights: { type: "string", default: "f32" },
    ctx: { type: "string", default: "512" },
    threads: { type: "string", default: "2" },
    compare: { type: "string", default: "0" },
    steps: { type: "string", default: "16" },
    rounds: { type: "string", default: "2" },
    vision: { type: "boolean", default: false },
    llamacpp: { type: "string", default: process.env.LLAMACPP_DIR ?? "" },
    gguf: { type: "string", default: "" },
    "llamacpp-threads": { type: "string", default: "1,2" },
  },
});
const presetArg = args.preset as string;
const weights = args.weights as "f32" | "int4" | "f16";
const ctx = Number(args.ctx);
if (!Number.isInteger(ctx) || ctx < 64 || ctx % 16 !== 0)
  throw new Error(`--ctx: must be a multiple of 16 >= 64, got ${args.ctx}`);
const threads = Number(args.threads);
const steps = Number(args.steps);
const rounds = Number(args.rounds);
if (!isPresetName(presetArg)) throw new Error(`--preset: unknown preset ${presetArg}`);
const preset: PresetName = presetArg;
if (!["f32", "int4", "f16"].includes(weights)) throw new Error(`--weights: must be f32, int4 or f16, got ${weights}`);
const llamaDir = args.llamacpp as string;
const gguf = args.gguf as string;
if (llamaDir && !gguf) throw new Error("--gguf: the llama.cpp model of the same shapes is needed with --llamacpp");
const llamaThreads = (args["llamacpp-threads"] as string).split(",").map(Number);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const argmax = (x: Float32Array) => x.reduce((best, v, i) => (v > (x[best] as number) ? i : best), 0);

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

/** One llama.cpp run of the anchor's bench.mjs (pp512, tg at depth ctx, 16 sequences at depth 128). */
function llamaCpp(t: number): Record<string, number> {
  const out = execFileSync(
    process.execPath,
    [
      join(llamaDir, "bench.mjs"),
      "--model",
      gguf,
      "--threads",
      String(t),
      "--reps",
      "1",
      "--pp",
      String(ctx),
      "--tg",
      String(steps),
      "--depth",
      String(ctx),
      "--par",
      "16",
      "--par-depth",
      "128",
    ],
    { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, stdio: ["ignore", "pipe", "ignore"] },
  );
  const res: Record<string, number> = {};
  for (const line of out.split("\n")) {
    if (!line.startsWith("{")) continue;
    const j = JSON.parse(line) as { test?: string; tok_s_median?: number };
    if (j.test === undefined || j.tok_s_median === undefined) continue;
    if (j.test.startsWith("pp")) res.prefill = j.tok_s_median;
    else if (j.test.includes("x16")) res.x16 = j.tok_s_median;
    else if (j.test.startsWith("tg")) res.decode = j.tok_s_median;
  }
  return res;
}

const dir = await presetCheckpoint(preset);
const BS = 16;
const ctxBlocks = Math.ceil(ctx / BS);
const d128 = 128 / BS;
const numBlocks = ctxBlocks + 1 + 16 * (d128 + 1) + 8;
const { r, ms: openMs } = await open(weights, dir, numBlocks);
const ffn = PRESETS[preset].llm.intermediateSize;
const wBytes = weightBytesPerStep(r, ffn);
console.log(
  `preset ${preset}, weights ${weights}, threads ${threads}, graphs ${r.stats.built ? `built in ${(r.stats.buildMs / 1000).toFixed(1)} s` : "from cache"}, open ${(openMs / 1000).toFixed(1)} s; weights read per decode step ${(wBytes / 1e6).toFixed(0)} MB`,
);

let visionMs = Number.NaN;
if (args.vision) {
  // Vision: one 448x448 slice (1024 patches), median of 3 after a warm-up (bench/vision.ts has more).
  const rgb = Uint8Array.from({ length: 448 * 448 * 3 }, (_, i) => (i * 2654435761) >>> 24);
  await r.encodeSlices([{ width: 448, height: 448, rgb }]);
  const vis: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await r.encodeSlices([{ width: 448, height: 448, rgb }]);
    vis.push(performance.now() - t0);
  }
  visionMs = median(vis);
}

const V = r.info.vocabSize;
const prompt = Array.from({ length: ctx }, (_, i) => (i * 7919 + 13) % 150000);
const prefixTable = Array.from({ length: ctxBlocks }, (_, i) => i);

/** This stack: prefill of ctx tokens, decode at batch 1 (depth ctx), 16 sequences (depth 128, own blocks). */
async function ours(): Promise<Record<string, number>> {
  await r.step([{ tokenIds: prompt.slice(0, 64), pastLen: 0, blockTable: prefixTable, wantLogits: true }]);
  const t0 = performance.now();
  await r.step([{ tokenIds: prompt, pastLen: 0, blockTable: prefixTable, wantLogits: true }]);
  const prefillMs = performance.now() - t0;
  const decodeMs = async (tables: number[][], past: number) => {
    const run = (k: number) =>
      r.step(tables.map((t) => ({ tokenIds: [(k * 31 + 7) % V], pastLen: past + k, blockTable: t, wantLogits: true })));
    await run(0);
    const times: number[] = [];
    for (let k = 1; k <= steps && past + k < (tables[0] as number[]).length * BS; k++) {
      const s0 = performance.now();
      await run(k);
      times.push(performance.now() - s0);
    }
    return median(times);
  };
  // batch 1 at depth ctx: the prefix blocks plus one fresh block (steps <= 15 stay inside it)
  const b1 = await decodeMs([[...prefixTable, ctxBlocks]], ctx);
  // 16 sequences, each with its own copy of the first 128 tokens' KV and one fresh block
  const base = ctxBlocks + 1;
  const tables = Array.from({ length: 16 }, (_, b) => {
    const t = Array.from({ length: d128 + 1 }, (_, j) => base + b * (d128 + 1) + j);
    for (let j = 0; j < d128; j++) r.copyBlock(j, t[j] as number);
    return t;
  });
  const b16 = await decodeMs(tables, 128);
  return { prefill: (ctx / prefillMs) * 1000, decodeMs: b1, decode: 1000 / b1, x16: (16 / b16) * 1000 };
}

interface Round {
  ours: Record<string, number>;
  ortBw: number;
  readBw: number;
  llama: Record<number, Record<string, number>>;
}
const results: Round[] = [];
for (let k = 0; k < rounds; k++) {
  const round: Round = { ours: {}, ortBw: 0, readBw: 0, llama: {} };
  const parts: (() => Promise<void>)[] = [
    async () => {
      round.ours = await ours();
    },
    async () => {
      round.ortBw = await ortStreamBandwidth(wBytes, threads);
      round.readBw = await plainReadBandwidth(wBytes, threads);
    },
    async () => {
      if (llamaDir) for (const t of llamaThreads) round.llama[t] = llamaCpp(t);
    },
  ];
  for (const part of k % 2 ? [...parts].reverse() : parts) await part();
  results.push(round);
  const boundMs = (wBytes / Math.max(round.ortBw, round.readBw)) * 1000;
  console.log(
    `round ${k + 1}: ours prefill ${round.ours.prefill?.toFixed(0)} tok/s, decode ${round.ours.decode?.toFixed(1)} tok/s (${round.ours.decodeMs?.toFixed(1)} ms, bound ${boundMs.toFixed(1)} ms), x16 ${round.ours.x16?.toFixed(1)} tok/s; read ${(round.readBw / 1e9).toFixed(1)} GB/s, ORT stream ${(round.ortBw / 1e9).toFixed(1)} GB/s; llama.cpp ${JSON.stringify(round.llama)}; load ${loadavg()[0]?.toFixed(1)}`,
  );
}
const rssMb = process.resourceUsage().maxRSS / 1024;
const med = (f: (x: Round) => number) => median(results.map(f));
const bw = med((x) => Math.max(x.ortBw, x.readBw));
const boundMs = (wBytes / bw) * 1000;
const bestLlama = (key: string) => (x: Round) => Math.max(0, ...Object.values(x.llama).map((l) => l[key] ?? 0));

console.log(`\nmedians over ${rounds} rounds (each round: this stack, the bound, llama.cpp; order alternates)`);
console.log(
  `read bandwidth: plain read (memchr, ${threads} threads) ${(med((x) => x.readBw) / 1e9).toFixed(1)} GB/s, ORT stream graph ${(med((x) => x.ortBw) / 1e9).toFixed(1)} GB/s -> bound ${boundMs.toFixed(1)} ms/step (${(1000 / boundMs).toFixed(1)} tok/s) for ${(wBytes / 1e6).toFixed(0)} MB`,
);
console.log(
  "| metric | this stack | read bound | llama.cpp (best of threads " +
    llamaThreads.join(",") +
    ") | ratio to llama.cpp |",
);
console.log("| --- | --- | --- | --- | --- |");
const row = (name: string, key: string, bound: string) => {
  const o = med((x) => x.ours[key] ?? 0);
  const l = llamaDir ? med(bestLlama(key)) : Number.NaN;
  const ratio = llamaDir ? med((x) => (x.ours[key] ?? 0) / bestLlama(key)(x)) : Number.NaN;
  console.log(`| ${name} | ${o.toFixed(1)} | ${bound} | ${l.toFixed(1)} | ${ratio.toFixed(2)} |`);
};
row(`prefill tok/s (T=${ctx})`, "prefill", "-");
row(
  `decode tok/s, batch 1, depth ${ctx}`,
  "decode",
  `${(1000 / boundMs).toFixed(1)} (decode = ${med((x) => (wBytes / Math.max(x.ortBw, x.readBw) / (x.ours.decodeMs as number)) * 1000).toFixed(2)} of it)`,
);
row("aggregate decode tok/s, 16 sequences, depth 128", "x16", "-");
if (llamaDir)
  for (const t of llamaThreads)
    console.log(
      `llama.cpp threads ${t}: prefill ${med((x) => x.llama[t]?.prefill ?? 0).toFixed(1)}, decode ${med((x) => x.llama[t]?.decode ?? 0).toFixed(1)}, x16 ${med((x) => x.llama[t]?.x16 ?? 0).toFixed(1)} tok/s`,
    );
if (args.vision) console.log(`vision ms / 448x448 slice: ${visionMs.toFixed(0)}`);
console.log(
  `build ${r.stats.built ? `${(r.stats.buildMs / 1000).toFixed(1)} s` : "cached"}, load ${(r.stats.loadMs / 1000).toFixed(1)} s, peak RSS ${rssMb.toFixed(0)} MB`,
);

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
