/**
 * Engine benchmark (not a test): continuous batching and caching on top of the model layer, in-thread
 * (no gRPC, no worker) so the numbers are the engine's.
 *
 *   npx tsx bench/engine.ts [--preset qwen2-0.5b] [--weights f32|int4] [--vision-precision f32|int8] [--threads 2] [--tokens 16]
 *                           [--concurrency 1,4,16,64] [--image 1344] [--skip-image]
 *
 * Reports:
 *  - aggregate decode tokens/s at each concurrency (all requests arrive together; decode time is from the
 *    moment every request has its first token to the last token), and the scaling factor vs 1;
 *  - TTFT for a 1344x1344 image (10 slices of 448x448, 640 visual tokens) plus a question: cold, repeated
 *    (prefix-cache hit, no vision encode), and the same image with another question;
 *  - KV cache bytes per token.
 */

import { parseArgs } from "node:util";
import { loadTokenizer } from "@minicpmv/preprocess/tokenizer";
import { isPresetName, type PresetName } from "../gpu-service/src/checkpoint";
import { LocalEngine } from "../gpu-service/src/engine/engine-handle";
import { greedyParams } from "../gpu-service/src/engine/sampler";
import type { EngineRequest, MediaInput, SamplingParams } from "../gpu-service/src/engine/types";
import { createModelRunner } from "../gpu-service/src/model";
import { ASSISTANT_TURN, lcg, presetCheckpoint, randomTextPrompt, SYSTEM_AND_USER } from "./common";

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "qwen2-0.5b" },
    weights: { type: "string", default: "f32" },
    "vision-precision": { type: "string", default: "f32" },
    threads: { type: "string", default: "0" },
    tokens: { type: "string", default: "16" },
    concurrency: { type: "string", default: "1,4,16,64" },
    image: { type: "string", default: "1344" },
    "skip-image": { type: "boolean", default: false },
  },
});
const presetArg = args.preset as string;
if (!isPresetName(presetArg)) throw new Error(`--preset: unknown preset ${presetArg}`);
const preset: PresetName = presetArg;
const weights = args.weights as "f32" | "int4" | "f16";
const visionPrecision = args["vision-precision"] as "f32" | "int8";
if (visionPrecision !== "f32" && visionPrecision !== "int8")
  throw new Error(`--vision-precision: must be f32 or int8, got ${visionPrecision}`);
const threads = Number(args.threads);
const tokens = Number(args.tokens);
const levels = (args.concurrency as string).split(",").map(Number);
const imageSide = Number(args.image);
if (imageSide % 448 !== 0) throw new Error(`--image: must be a multiple of 448, got ${imageSide}`);

const GREEDY: SamplingParams = greedyParams(tokens, { ignoreEos: true });

const rand = lcg();
let ids = 0;
const req = (tokenIds: number[], media: MediaInput[] = [], params = GREEDY): EngineRequest => ({
  id: `b${ids++}`,
  prompt: { tokenIds, media, counts: { text: tokenIds.length, image: 0, video: 0, total: tokenIds.length } },
  params,
  priority: 0,
});

/** One 1344x1344 image as the preprocessor would cut it: overview + 3x3 tiles of 448x448. */
function imagePrompt(question: number[]): EngineRequest {
  const grid = imageSide / 448;
  const tokenIds = [...SYSTEM_AND_USER, 151658, 15, 151659];
  const slices: MediaInput["slices"] = [];
  const pixels = (k: number) => {
    const rgb = new Uint8Array(448 * 448 * 3);
    const pixelRand = lcg(777 + k);
    for (let i = 0; i < rgb.length; i++) rgb[i] = (pixelRand() * 256) | 0;
    return rgb;
  };
  const place = (open: number, close: number, k: number) => {
    tokenIds.push(open);
    slices.push({ width: 448, height: 448, rgb: pixels(k), tokenOffset: tokenIds.length });
    for (let i = 0; i < 64; i++) tokenIds.push(128244);
    tokenIds.push(close);
  };
  place(151646, 151647, 0);
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) place(151656, 151657, 1 + r * grid + c);
    tokenIds.push(198);
  }
  tokenIds.push(...question, ...ASSISTANT_TURN);
  return req(tokenIds, [{ modality: "image", contentHash: `bench-${imageSide}`, slices }], { ...GREEDY, maxTokens: 1 });
}

async function main() {
  const dir = await presetCheckpoint(preset);
  const t0 = performance.now();
  const model = await createModelRunner({
    modelDir: dir,
    blockSize: 16,
    kvCacheBytes: 512 * 1024 ** 2,
    weights,
    visionPrecision,
    ...(threads > 0 ? { intraOpThreads: threads } : {}),
  });
  const tok = await loadTokenizer(dir);
  const eng = new LocalEngine(model, tok, {
    maxBatchTokens: 4096,
    maxRunning: 64,
    maxWaiting: 256,
    encoderCacheBytes: 512 * 1024 ** 2,
    enablePrefixCaching: true,
  });
  const info = model.info;
  console.log(
    JSON.stringify({
      preset,
      weights,
      vision_precision: visionPrecision,
      load_s: +((performance.now() - t0) / 1000).toFixed(1),
      kv_bytes_per_token: info.kvBytesPerToken,
      kv_blocks: info.numBlocks,
      block_size: info.blockSize,
    }),
  );

  const rows: { concurrency: number; decode_tok_s: number; ttft_ms: number; scaling: number }[] = [];
  for (const c of levels) {
    const start = performance.now();
    const firsts: number[] = [];
    let generated = 0;
    let end = 0;
    await Promise.all(
      Array.from({ length: c }, async () => {
        const prompt = randomTextPrompt(32, rand);
        let first = true;
        for await (const ev of eng.generate(req(prompt))) {
          if (ev.type !== "token") continue;
          const now = performance.now();
          if (first) firsts.push(now);
          else generated += ev.tokenIds.length;
          first = false;
          end = Math.max(end, now);
        }
      }),
    );
    const allFirst = Math.max(...firsts);
    // Tokens after each request's first one, over the time the batch was decoding.
    const decodeTokS = generated / ((end - allFirst) / 1000);
    const base = rows[0]?.decode_tok_s ?? decodeTokS;
    const row = {
      concurrency: c,
      decode_tok_s: +decodeTokS.toFixed(1),
      ttft_ms: +(allFirst - start).toFixed(0),
      scaling: +(decodeTokS / base).toFixed(2),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }

  if (!args["skip-image"]) {
    const q1 = [3838, 374, 304, 279, 2168, 30]; // "What is in the image?"
    const q2 = [3838, 1894, 374, 279, 1803, 30];
    const ttft = async (r: EngineRequest) => {
      const t = performance.now();
      const c0 = process.cpuUsage();
      let cpu = 0;
      let ms = 0;
      let cached = 0;
      let vision = 0;
      for await (const ev of eng.generate(r)) {
        if (ev.type === "token" && ms === 0) {
          ms = performance.now() - t;
          const c = process.cpuUsage(c0);
          cpu = (c.user + c.system) / 1000;
        }
        if (ev.type === "final") {
          cached = ev.usage.cachedPromptTokens;
          vision = ev.timings.visionEncodeMs;
        }
        if (ev.type === "error") throw new Error(ev.message);
      }
      return {
        ttft_ms: +ms.toFixed(0),
        // process CPU time until the first token: the work, whatever share of the cores the machine left us
        ttft_cpu_ms: +cpu.toFixed(0),
        vision_ms: +vision.toFixed(0),
        cached_tokens: cached,
        prompt_tokens: r.prompt.tokenIds.length,
      };
    };
    console.log(JSON.stringify({ image: `${imageSide}x${imageSide}`, case: "cold", ...(await ttft(imagePrompt(q1))) }));
    console.log(
      JSON.stringify({
        image: `${imageSide}x${imageSide}`,
        case: "repeat (prefix hit)",
        ...(await ttft(imagePrompt(q1))),
      }),
    );
    console.log(
      JSON.stringify({
        image: `${imageSide}x${imageSide}`,
        case: "same image, new question",
        ...(await ttft(imagePrompt(q2))),
      }),
    );
  }
  const s = await eng.stats();
  console.log(
    JSON.stringify({
      prefix_cache_hits: s.prefixCacheHits,
      prefix_cache_queries: s.prefixCacheQueries,
      preemptions: s.preemptions,
    }),
  );
  await eng.close();
}

await main();
