/**
 * The GenerationService over real gRPC on loopback: validation and error codes against the in-thread
 * engine with the test fake model, then the real tiny-a model in a worker thread (goldens, 32 concurrent
 * mixed streams with cancellations, batching and preemption invariance, no KV leak).
 */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  FinishReason,
  GenerateRequestSchema,
  GenerationService,
  type MediaItem,
  Modality,
  type PreparedPrompt,
} from "@minicpmv/proto";
import { createClient, type GrpcError, grpc, type ServiceClient } from "@minicpmv/proto/grpc";
import { Health, ServingStatus } from "@minicpmv/proto/health";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTinyCheckpoint } from "./checkpoint";
import { LocalEngine } from "./engine/engine-handle";
import { FakeModel, fakeTokens } from "./engine/fake-model.test-support";
import { goldenDir, readNpy } from "./model/testing";
import { type GpuGrpcServer, startGrpcServer, toEngineRequest } from "./service";
import { WorkerEngine } from "./worker";

type Req = MessageInitShape<typeof GenerateRequestSchema>;
type Client = ServiceClient<typeof GenerationService.method>;

interface Outcome {
  tokens: number[][];
  text: string[];
  finish: FinishReason[];
  cached: number;
  completion: number;
  error?: GrpcError;
}

async function run(
  client: Client,
  req: Req,
  opts: { signal?: AbortSignal; deadline?: number; cancelAfter?: number; ac?: AbortController } = {},
): Promise<Outcome> {
  const o: Outcome = { tokens: [], text: [], finish: [], cached: -1, completion: -1 };
  let seen = 0;
  try {
    for await (const r of client.generate(req, { signal: opts.ac?.signal, deadline: opts.deadline })) {
      const ev = r.event;
      if (ev.case === "token") {
        o.tokens[ev.value.index] = [...(o.tokens[ev.value.index] ?? []), ...ev.value.tokenIds];
        o.text[ev.value.index] = (o.text[ev.value.index] ?? "") + ev.value.text;
        seen++;
        if (opts.cancelAfter !== undefined && seen >= opts.cancelAfter) opts.ac?.abort();
      } else if (ev.case === "choiceEnd") o.finish[ev.value.index] = ev.value.finishReason;
      else if (ev.case === "final") {
        o.cached = ev.value.usage?.cachedPromptTokens ?? -1;
        o.completion = ev.value.usage?.completionTokens ?? -1;
      }
    }
  } catch (e) {
    o.error = e as GrpcError;
  }
  return o;
}

const greedy = (maxTokens: number, extra: Req["params"] = {}): Req["params"] => ({
  temperature: 0,
  repetitionPenalty: 1,
  maxTokens,
  ...extra,
});

describe("GenerationService with the fake model", () => {
  let server: GpuGrpcServer;
  let local: LocalEngine;
  let client: Client;

  beforeAll(async () => {
    server = await startGrpcServer({ host: "127.0.0.1", port: 0, maxMessageBytes: 64 << 20, limits: { maxN: 4 } });
    local = new LocalEngine(new FakeModel({ contextLength: 64 }), fakeTokens, {
      maxBatchTokens: 32,
      maxRunning: 8,
      maxWaiting: 1,
      encoderCacheBytes: 1 << 20,
      enablePrefixCaching: true,
      terminators: [63],
    });
    client = createClient(GenerationService, `127.0.0.1:${server.port}`);
  });

  afterAll(async () => {
    client.close();
    await server.stop(1000);
    await local.close();
  });

  it("answers UNAVAILABLE and health NOT_SERVING until the engine is attached", async () => {
    const health = createClient(Health, `127.0.0.1:${server.port}`);
    expect((await health.check({ service: "minicpmv.v1.GenerationService" })).status).toBe(ServingStatus.NOT_SERVING);
    await expect(client.info({})).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    server.attach(local);
    server.setServing(true);
    expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    const info = await client.info({});
    expect(info).toMatchObject({
      modelName: "fake",
      contextLength: 64,
      blockSize: 4,
      kvCapacityBlocks: 64,
      ready: true,
    });
    health.close();
  });

  it("fills unset parameters from the reference presets; temperature 0 is plain greedy", () => {
    const params = (p: Req["params"]) => {
      const req = create(GenerateRequestSchema, { prompt: { tokenIds: [1] }, ...(p ? { params: p } : {}) });
      const { temperature, topP, topK, repetitionPenalty, maxTokens, beamWidth } = toEngineRequest(req, "r", {
        maxN: 4,
      }).params;
      return { temperature, topP, topK, repetitionPenalty, maxTokens, beamWidth };
    };
    const sampling = { temperature: 0.7, topP: 0.8, topK: 100, maxTokens: 2048, beamWidth: 1 };
    expect(params(undefined)).toEqual({ ...sampling, repetitionPenalty: 1.05 });
    expect(params({ temperature: 0 })).toEqual({ ...sampling, temperature: 0, repetitionPenalty: 1 });
    expect(params({ temperature: 0, repetitionPenalty: 1.5 })).toMatchObject({ repetitionPenalty: 1.5 });
    expect(params({ beamWidth: 3 })).toEqual({
      temperature: 0,
      topP: 1,
      topK: 0,
      repetitionPenalty: 1.2,
      maxTokens: 2048,
      beamWidth: 3,
    });
  });

  it("rejects bad parameters with INVALID_ARGUMENT naming the field and the limit", async () => {
    const cases: [Req["params"], string][] = [
      [{ topP: 0 }, "params.top_p: 0 must be in (0, 1]"],
      [{ temperature: -1 }, "params.temperature: -1 must be in [0, 100]"],
      [{ n: 9 }, "params.n: 9 exceeds the limit of 4"],
      [{ topLogprobs: 21, logprobs: true }, "params.top_logprobs: 21 exceeds the limit of 20"],
      [{ presencePenalty: 3 }, "params.presence_penalty: 3 must be in [-2, 2]"],
      [{ beamWidth: 2, stop: ["x"] }, "params.stop: not supported with beam search"],
      [{ minTokens: 5, maxTokens: 2 }, "params.min_tokens: 5 must not exceed params.max_tokens (2)"],
      [{ logitBias: { 3: 101 } }, "params.logit_bias[3]: 101 must be in [-100, 100]"],
      [{ lengthPenalty: 11 }, "params.length_penalty: 11 must be in [-10, 10]"],
    ];
    for (const [params, msg] of cases) {
      const o = await run(client, { prompt: { tokenIds: [1, 2] }, params });
      expect(o.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(o.error?.message).toContain(msg);
    }
    const long = await run(client, { prompt: { tokenIds: Array(64).fill(1) } });
    expect(long.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(long.error?.message).toBe(
      "prompt.token_ids: 64 tokens, the context length is 64 (prompt + at least 1 generated token)",
    );
    const empty = await run(client, { prompt: { tokenIds: [] } });
    expect(empty.error?.message).toBe("prompt.token_ids: must not be empty");
  });

  it("streams, applies defaults, caps max_tokens by the context and refuses a full queue", async () => {
    // Unset params take the reference sampling preset; max_tokens 2048 is capped to 64 - 4 = 60.
    const o = await run(client, { prompt: { tokenIds: [1, 2, 3, 4] }, params: { ignoreEos: true } });
    expect(o.tokens[0]).toHaveLength(60);
    expect(o.finish).toEqual([FinishReason.LENGTH]);
    // maxWaiting = 1: three at once, the engine admits in its next step, so at least one is refused.
    const all = await Promise.all([1, 2, 3].map((i) => run(client, { prompt: { tokenIds: [i] }, params: greedy(3) })));
    const refused = all.filter((r) => r.error);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]?.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(refused[0]?.error?.message).toContain("the waiting queue is full (1 requests)");
    expect((await client.info({})).kvUsedBlocks).toBe(0);
  });
});

// ----------------------------------------------------------------------------------------------------
// tiny-a through the worker

const IMG = 151646;
const IMG_END = 151647;
const SLICE = 151656;
const SLICE_END = 151657;
const UNK = 128244;
const SYS = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198];
const TAIL = [151645, 198, 151644, 77091, 198];
const COMMON = Array.from({ length: 20 }, (_, k) => 4000 + k);

let rngState = 12345;
function rand(): number {
  rngState = (Math.imul(rngState, 1103515245) + 12345) >>> 0;
  return rngState / 2 ** 32;
}

function randomSlice(w: number, h: number) {
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (rand() * 256) | 0;
  return { width: w, height: h, rgb };
}

/** A prompt with `images` (each a list of slice sizes; the first is the overview) and some text. */
function mmPrompt(images: { sizes: [number, number][]; modality: Modality }[], text: number[]): PreparedPrompt {
  const ids = [...SYS];
  const media: MessageInitShape<typeof import("@minicpmv/proto").MediaItemSchema>[] = [];
  for (const img of images) {
    const slices = [];
    for (const [k, [w, h]] of img.sizes.entries()) {
      ids.push(k === 0 ? IMG : SLICE);
      slices.push({ ...randomSlice(w, h), tokenOffset: ids.length });
      for (let i = 0; i < 64; i++) ids.push(UNK);
      ids.push(k === 0 ? IMG_END : SLICE_END);
    }
    ids.push(198);
    media.push({ modality: img.modality, slices });
  }
  ids.push(...text, ...TAIL);
  return { tokenIds: ids, media } as unknown as PreparedPrompt;
}

function goldenCase(name: string): { req: Req; greedy: number[] } {
  const dir = join(goldenDir(), "tiny-a", name);
  const meta = JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")) as {
    input_ids: number[];
    greedy_tokens: number[];
    image_bound: [number, number][];
    slices?: { preprocess_file: string; width: number; height: number }[];
  };
  const media: Partial<MediaItem>[] = (meta.slices ?? []).map((s, k) => ({
    modality: Modality.IMAGE,
    slices: [
      {
        width: s.width,
        height: s.height,
        rgb: readNpy(join(goldenDir(), s.preprocess_file)).data as Uint8Array,
        tokenOffset: (meta.image_bound[k] as [number, number])[0],
      },
    ],
  })) as Partial<MediaItem>[];
  return {
    req: { prompt: { tokenIds: meta.input_ids, media } as unknown as PreparedPrompt, params: greedy(16) },
    greedy: meta.greedy_tokens,
  };
}

describe("GenerationService on tiny-a (worker thread, real gRPC)", () => {
  let server: GpuGrpcServer;
  let engine: WorkerEngine;
  let client: Client;
  let modelDir: string;

  beforeAll(async () => {
    modelDir = await ensureTinyCheckpoint();
    server = await startGrpcServer({ host: "127.0.0.1", port: 0, maxMessageBytes: 256 << 20, limits: { maxN: 4 } });
    engine = await WorkerEngine.start({
      model: { modelDir, blockSize: 16, numBlocks: 512 },
      engine: {
        maxBatchTokens: 1024,
        maxRunning: 64,
        maxWaiting: 64,
        encoderCacheBytes: 64 << 20,
        enablePrefixCaching: true,
      },
    });
    server.attach(engine);
    server.setServing(true);
    client = createClient(GenerationService, `127.0.0.1:${server.port}`, { maxMessageBytes: 256 << 20 });
  });

  afterAll(async () => {
    client?.close();
    await server?.stop(1000);
    await engine?.close();
  });

  it("reproduces the reference greedy tokens (text and image goldens)", async () => {
    for (const name of ["i_text_only", "ii_one_image_unsliced"]) {
      const g = goldenCase(name);
      const o = await run(client, g.req);
      expect(o.error).toBeUndefined();
      expect(o.tokens[0]).toEqual(g.greedy);
    }
  });

  it("gives identical greedy output alone and batched with 15 mixed others", async () => {
    const g = goldenCase("i_text_only");
    const others: Req[] = Array.from({ length: 15 }, (_, i) => ({
      prompt:
        i % 3 === 0
          ? mmPrompt([{ sizes: [[224, 224]], modality: Modality.IMAGE }], [3838, 374, 220 + i])
          : { tokenIds: [...SYS, 100 + i, 200 + i, 300 + i, ...TAIL] },
      params: i % 2 ? greedy(8 + (i % 5)) : { maxTokens: 8 + (i % 4), seed: BigInt(i), ignoreEos: true },
    }));
    const outs = await Promise.all([run(client, g.req), ...others.map((r) => run(client, r))]);
    expect(outs[0]?.tokens[0]).toEqual(g.greedy);
    expect(outs.every((o) => o.error === undefined)).toBe(true);
  });

  it("serves 32 concurrent mixed streams with random cancellations and leaks no KV block", async () => {
    const reqs: { req: Req; cancelAfter?: number; deadline?: number }[] = [];
    for (let i = 0; i < 32; i++) {
      const kind = i % 4;
      const prompt =
        kind === 0
          ? // A shared 34-token prefix (2 full blocks) then a per-request tail: prefix-cache hits.
            {
              tokenIds: [
                ...SYS,
                ...COMMON,
                ...Array.from({ length: 5 + i }, (_, k) => 1000 + ((k * 37 + i) % 5000)),
                ...TAIL,
              ],
            }
          : kind === 1
            ? mmPrompt(
                [
                  {
                    sizes: [
                      [224, 224],
                      [224, 112],
                      [224, 112],
                    ],
                    modality: Modality.IMAGE,
                  },
                ],
                [3838, 374],
              )
            : kind === 2
              ? mmPrompt(
                  [
                    { sizes: [[112, 112]], modality: Modality.IMAGE },
                    { sizes: [[168, 112]], modality: Modality.IMAGE },
                  ],
                  [3838, 374, 220],
                )
              : mmPrompt(
                  Array.from({ length: 4 }, () => ({
                    sizes: [[112, 112]] as [number, number][],
                    modality: Modality.VIDEO,
                  })),
                  [3838],
                );
      const params =
        i % 5 === 0
          ? { maxTokens: 12, n: 2, seed: BigInt(i) }
          : i % 7 === 0
            ? { beamWidth: 3, maxTokens: 8 }
            : { maxTokens: 6 + (i % 6), seed: BigInt(i) };
      const r = rand();
      reqs.push({
        req: { requestId: `s${i}`, prompt: prompt as PreparedPrompt, params, priority: i % 3 },
        ...(r < 0.25
          ? { cancelAfter: 1 + (((r * 100) | 0) % 4) }
          : r < 0.35
            ? { deadline: 50 + ((r * 1000) | 0) }
            : {}),
      });
    }
    const outs = await Promise.all(
      reqs.map((r) =>
        run(client, r.req, {
          ac: new AbortController(),
          ...(r.cancelAfter ? { cancelAfter: r.cancelAfter } : {}),
          ...(r.deadline ? { deadline: r.deadline } : {}),
        }),
      ),
    );
    for (const [i, o] of outs.entries()) {
      const r = reqs[i];
      if (o.error) {
        // Only the ones we cancelled or gave a deadline may end early.
        expect(r?.cancelAfter !== undefined || r?.deadline !== undefined).toBe(true);
        expect([grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED]).toContain(o.error.code);
      } else {
        const n = (reqs[i]?.req.params as { n?: number } | undefined)?.n ?? 1;
        expect(o.finish.filter((f) => f !== undefined)).toHaveLength(n);
      }
    }
    expect(outs.filter((o) => !o.error).length).toBeGreaterThan(16);
    // Cancellation reaches the engine asynchronously: wait until it is idle, then nothing may be held.
    let info = await client.info({});
    for (let t = 0; t < 200 && (info.running > 0 || info.queueDepth > 0); t++) {
      await new Promise((r) => setTimeout(r, 25));
      info = await client.info({});
    }
    expect(info).toMatchObject({ running: 0, queueDepth: 0, kvUsedBlocks: 0 });
    const stats = await engine.stats();
    expect(stats.kvUsedBlocks).toBe(0);
    expect(stats.kvCachedBlocks).toBeGreaterThan(0);
    expect(stats.prefixCacheHits).toBeGreaterThan(0);
  });

  it("gives the same greedy tokens after preemption and recompute", async () => {
    // 7 blocks of 16 tokens: two 33-token prompts fit (3 blocks each), but both growing past 48 tokens need
    // 8, so the later one is preempted and recomputed.
    const small = await WorkerEngine.start({
      model: { modelDir, blockSize: 16, numBlocks: 7 },
      engine: { maxBatchTokens: 512, maxRunning: 8, maxWaiting: 8, encoderCacheBytes: 0, enablePrefixCaching: true },
    });
    const s2 = await startGrpcServer({ host: "127.0.0.1", port: 0, maxMessageBytes: 64 << 20, limits: { maxN: 4 } });
    s2.attach(small);
    const c2 = createClient(GenerationService, `127.0.0.1:${s2.port}`);
    try {
      const reqs: Req[] = [0, 1, 2, 3].map((i) => ({
        prompt: { tokenIds: [...SYS, ...Array.from({ length: 14 }, (_, k) => 500 + i * 50 + k), ...TAIL] },
        params: greedy(24, { ignoreEos: true }),
      }));
      const alone = await Promise.all(reqs.map((r) => run(client, r)));
      const together = await Promise.all(reqs.map((r) => run(c2, r)));
      expect((await small.stats()).preemptions).toBeGreaterThan(0);
      for (const [i, o] of together.entries()) {
        expect(o.error).toBeUndefined();
        expect(o.tokens[0]).toEqual(alone[i]?.tokens[0]);
      }
      expect((await small.stats()).kvUsedBlocks).toBe(0);
    } finally {
      c2.close();
      await s2.stop(1000);
      await small.close();
    }
  });
});
