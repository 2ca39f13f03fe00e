/**
 * Vision benchmark (not a test): ms per 448x448 slice of the vision tower + resampler in f32 and int8
 * (`VISION_PRECISION`), runs alternating between the two so machine load hits both alike, at each thread
 * count (wall and process CPU time: on a shared machine CPU time shows the work, wall time the wait); the int8 image embeddings' cosine to f32 on the preset; and on the tiny-a goldens, int8's distance
 * from the goldens (embedding cosine, first-step logit difference, top-1) next to f32's.
 *
 *   npx tsx bench/vision.ts [--preset qwen2-0.5b] [--threads 1,2] [--reps 3] [--slices 1]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { DEFAULT_CACHE_DIR, ensureTinyCheckpoint, isPresetName, loadCheckpoint } from "../gpu-service/src/checkpoint";
import { createModelRunner } from "../gpu-service/src/model";
import { cosine, GOLDEN_IMAGE_CASES, goldenDistance } from "../gpu-service/src/model/golden-check";
import { ensureVisionGraph } from "../gpu-service/src/model/graph-cache";
import { normalizePixels } from "../gpu-service/src/model/pixels";
import { visionPositionIds } from "../gpu-service/src/model/position-ids";
import { sincos2d, VISION_IO, type VisionPrecision } from "../gpu-service/src/model/vision-graph";
import { presetCheckpoint } from "./common";

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "qwen2-0.5b" },
    threads: { type: "string", default: "1,2" },
    reps: { type: "string", default: "3" },
    slices: { type: "string", default: "1" },
  },
});
const preset = args.preset as string;
if (!isPresetName(preset)) throw new Error(`--preset: unknown preset ${preset}`);
const threadList = (args.threads as string).split(",").map(Number);
const reps = Number(args.reps);
const nSlices = Number(args.slices);
const PRECISIONS: VisionPrecision[] = ["f32", "int8"];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

// 1) Tiny-a goldens: int8 vs f32 distance from the upstream (PyTorch f32) goldens.
const tinyDir = await ensureTinyCheckpoint();
console.log("tiny-a goldens (first step after the prompt; embeddings of every shipped slice):");
console.log(
  "| case | precision | embed cosine min | embed max abs diff | logit max abs diff | top-1 = golden | golden top-1 margin |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const precision of PRECISIONS) {
  const r = await createModelRunner({
    modelDir: tinyDir,
    numBlocks: 64,
    intraOpThreads: 1,
    visionPrecision: precision,
  });
  for (const name of GOLDEN_IMAGE_CASES) {
    const d = await goldenDistance(r, name);
    console.log(
      `| ${name} | ${precision} | ${d.embedCosineMin.toFixed(6)} | ${d.embedMaxAbsDiff.toExponential(2)} | ${d.logitMaxAbsDiff.toExponential(2)} | ${d.top1 === d.goldenTop1} | ${d.goldenTop1Margin.toFixed(3)} |`,
    );
  }
  await r.dispose();
}

// 2) The preset's full vision tower: speed and int8-vs-f32 cosine.
const dir = await presetCheckpoint(preset);
const ckpt = await loadCheckpoint(dir, { hashMemo: join(DEFAULT_CACHE_DIR, "checkpoint-digests.json") });
const paths: Record<string, string> = {};
for (const p of PRECISIONS) {
  const e = await ensureVisionGraph(ckpt, p, DEFAULT_CACHE_DIR);
  paths[p] = e.path;
  if (e.built) console.log(`built the ${p} vision graph`);
}
const cfg = ckpt.config;
await ckpt.close();
const E = cfg.resampler.embedDim;
const side = 448;
const nh = side / cfg.vision.patchSize;
// A smooth image with texture (a gradient plus noise), closer to photos than uniform noise.
const rgb = new Uint8Array(side * side * 3);
let s = 12345;
for (let y = 0; y < side; y++)
  for (let x = 0; x < side; x++)
    for (let c = 0; c < 3; c++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      rgb[(y * side + x) * 3 + c] = Math.min(255, ((x + y * (c + 1)) * 255) / (side * 3) + (s >>> 27) * 4);
    }
const plane = 3 * side * side;
const pixels = new Float32Array(nSlices * plane);
for (let j = 0; j < nSlices; j++) normalizePixels(rgb, side, side, pixels.subarray(j * plane, (j + 1) * plane));
const feeds = {
  [VISION_IO.pixels]: new ort.Tensor("float32", pixels, [nSlices, 3, side, side]),
  [VISION_IO.positionIds]: new ort.Tensor("int64", visionPositionIds(nh, nh, "torch-avx2"), [nh * nh]),
  [VISION_IO.pos2d]: new ort.Tensor("float32", sincos2d(nh, nh, E), [nh * nh, E]),
};
console.log(
  `\n${preset}: SigLIP (${cfg.vision.numLayers} layers, hidden ${cfg.vision.hiddenSize}) + resampler (E ${E}), ${nSlices} slice(s) per run, ms per slice, median of ${reps} alternating runs`,
);
console.log(
  "| threads | f32 ms/slice (CPU ms) | int8 ms/slice (CPU ms) | speed-up wall (CPU) | int8 vs f32 embedding cosine |",
);
console.log("| --- | --- | --- | --- | --- |");
for (const threads of threadList) {
  const sessions: Record<string, ort.InferenceSession> = {};
  for (const p of PRECISIONS)
    sessions[p] = await ort.InferenceSession.create(paths[p] as string, {
      graphOptimizationLevel: "all",
      intraOpNumThreads: threads,
      logSeverityLevel: 3,
    });
  const out: Record<string, Float32Array> = {};
  const times: Record<string, number[]> = { f32: [], int8: [] };
  const cpu: Record<string, number[]> = { f32: [], int8: [] };
  for (const p of PRECISIONS) {
    const res = await (sessions[p] as ort.InferenceSession).run(feeds); // warm-up
    out[p] = (res[VISION_IO.output] as ort.Tensor).data as Float32Array;
  }
  for (let i = 0; i < reps; i++)
    for (const p of i % 2 ? [...PRECISIONS].reverse() : PRECISIONS) {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      await (sessions[p] as ort.InferenceSession).run(feeds);
      const c = process.cpuUsage(c0);
      (times[p] as number[]).push((performance.now() - t0) / nSlices);
      (cpu[p] as number[]).push((c.user + c.system) / 1000 / nSlices);
    }
  const f = median(times.f32 as number[]);
  const q = median(times.int8 as number[]);
  const fc = median(cpu.f32 as number[]);
  const qc = median(cpu.int8 as number[]);
  console.log(
    `| ${threads} | ${f.toFixed(0)} (${fc.toFixed(0)}) | ${q.toFixed(0)} (${qc.toFixed(0)}) | ${(f / q).toFixed(2)}x (${(fc / qc).toFixed(2)}x) | ${cosine(out.int8 as Float32Array, out.f32 as Float32Array).toFixed(6)} |`,
  );
  for (const p of PRECISIONS) await (sessions[p] as ort.InferenceSession).release();
}
console.log(
  `load average ${(await import("node:os"))
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
);
