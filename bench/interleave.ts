/**
 * Vision/decode interleaving benchmark (not a test): the inter-token latency of a running stream while a
 * 1344x1344 image (10 slices) arrives, with the engine encoding `--slices-per-step` slices per step.
 * `VISION_SLICES_PER_STEP=10` encodes the whole image in one step, which is what the engine did before
 * interleaving (every running stream waited for the whole encode); 1 is the default now.
 *
 *   npx tsx bench/interleave.ts [--preset tiny-a] [--weights f32|int4] [--threads 0] [--image 1344]
 *                               [--slices-per-step 10,1,10,1]
 *
 * Per setting (a fresh engine each, so the image is encoded cold): one text stream decodes; after its 5th
 * token the image request arrives; reported are the stream's token gaps before the image (baseline) and
 * while the image is encoded and prefilled (max and median), how many tokens the stream got meanwhile, and
 * the image request's time to first token.
 */

import { parseArgs } from "node:util";
import { loadTokenizer } from "@minicpmv/preprocess/tokenizer";
import { isPresetName } from "../gpu-service/src/checkpoint";
import { Engine } from "../gpu-service/src/engine/engine";
import { greedyParams } from "../gpu-service/src/engine/sampler";
import type { EngineEvent, EngineRequest, MediaInput } from "../gpu-service/src/engine/types";
import { createModelRunner } from "../gpu-service/src/model";
import { ASSISTANT_TURN, lcg, presetCheckpoint, randomTextPrompt, SYSTEM_AND_USER } from "./common";

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "tiny-a" },
    weights: { type: "string", default: "f32" },
    threads: { type: "string", default: "0" },
    image: { type: "string", default: "1344" },
    "slices-per-step": { type: "string", default: "10,1,10,1" },
  },
});
const preset = args.preset as string;
if (!isPresetName(preset)) throw new Error(`--preset: unknown preset ${preset}`);
const side = Number(args.image);
if (side % 448 !== 0) throw new Error(`--image: must be a multiple of 448, got ${side}`);
const settings = (args["slices-per-step"] as string).split(",").map(Number);

let ids = 0;
const rand = lcg(5);

/** A `side`x`side` image cut as the preprocessor would: overview + grid x grid tiles of 448x448. */
function imageRequest(): EngineRequest {
  const grid = side / 448;
  const tokenIds = [...SYSTEM_AND_USER, 151658, 15, 151659];
  const slices: MediaInput["slices"] = [];
  const place = (open: number, close: number, k: number) => {
    tokenIds.push(open);
    const px = lcg(900 + k);
    const rgb = new Uint8Array(448 * 448 * 3);
    for (let i = 0; i < rgb.length; i++) rgb[i] = (px() * 256) | 0;
    slices.push({ width: 448, height: 448, rgb, tokenOffset: tokenIds.length });
    for (let i = 0; i < 64; i++) tokenIds.push(128244);
    tokenIds.push(close);
  };
  place(151646, 151647, 0);
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) place(151656, 151657, 1 + r * grid + c);
    tokenIds.push(198);
  }
  tokenIds.push(3838, 374, 304, 279, 2168, 30, ...ASSISTANT_TURN);
  const counts = { text: tokenIds.length, image: 0, video: 0, total: tokenIds.length };
  return {
    id: `img${ids++}`,
    prompt: { tokenIds, media: [{ modality: "image", contentHash: `interleave-${side}`, slices }], counts },
    params: greedyParams(1, { ignoreEos: true }),
    priority: 0,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

async function main() {
  const dir = await presetCheckpoint(preset as Parameters<typeof presetCheckpoint>[0]);
  const threads = Number(args.threads);
  const model = await createModelRunner({
    modelDir: dir,
    kvCacheBytes: 256 * 1024 ** 2,
    weights: args.weights as "f32" | "int4" | "f16",
    ...(threads > 0 ? { intraOpThreads: threads } : {}),
  });
  const tok = await loadTokenizer(dir);
  console.log(JSON.stringify({ preset, weights: args.weights, image: `${side}x${side}`, threads }));
  // Warm-up: the first run of each session pays ONNX Runtime's one-time costs.
  const warm = imageRequest().prompt.media[0]?.slices[0];
  if (warm) await model.encodeSlices([warm]);
  await model.step([{ tokenIds: [1, 2, 3], pastLen: 0, blockTable: [0], wantLogits: true }]);
  for (const perStep of settings) {
    const engine = new Engine(model, tok, {
      maxBatchTokens: 2048,
      maxRunning: 64,
      maxWaiting: 64,
      encoderCacheBytes: 256 * 1024 ** 2,
      enablePrefixCaching: true,
      visionSlicesPerStep: perStep,
    });
    const loop = engine.run();
    const streamTimes: number[] = [];
    let imageAt = 0;
    let imageFirst = 0;
    let imageDone = false;
    let after = 0;
    const streamId = `s${ids++}`;
    await new Promise<void>((resolve, reject) => {
      const onStream = (ev: EngineEvent) => {
        if (ev.type === "error") reject(new Error(ev.message));
        if (ev.type !== "token") return;
        streamTimes.push(performance.now());
        if (streamTimes.length === 5) {
          imageAt = performance.now();
          engine.add(imageRequest(), (iev) => {
            if (iev.type === "error") reject(new Error(iev.message));
            if (iev.type === "token" && imageFirst === 0) imageFirst = performance.now();
            if (iev.type === "final") imageDone = true;
          });
        }
        if (imageDone && ++after === 5) {
          engine.abort(streamId);
          resolve();
        }
      };
      engine.add(
        {
          id: streamId,
          prompt: {
            tokenIds: randomTextPrompt(32, rand),
            media: [],
            counts: { text: 51, image: 0, video: 0, total: 51 },
          },
          params: greedyParams(100_000, { ignoreEos: true }),
          priority: 0,
        },
        onStream,
      );
    });
    engine.stop();
    await loop;
    const gaps = streamTimes.slice(1).map((t, i) => t - (streamTimes[i] as number));
    const before = gaps.filter((_, i) => (streamTimes[i + 1] as number) <= imageAt);
    // Gaps of tokens that arrived after the image did, up to the image's first token (its encode + prefill).
    const during = gaps.filter(
      (_, i) => (streamTimes[i + 1] as number) > imageAt && (streamTimes[i] as number) < imageFirst,
    );
    console.log(
      JSON.stringify({
        slices_per_step: perStep,
        image_ttft_ms: +(imageFirst - imageAt).toFixed(0),
        stream_gap_baseline_ms: +median(before).toFixed(1),
        stream_tokens_while_image: during.length - 1,
        stream_gap_max_ms: +Math.max(...during).toFixed(0),
        stream_gap_median_ms: +median(during).toFixed(0),
      }),
    );
  }
  await model.dispose();
}

await main();
