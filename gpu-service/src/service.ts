/**
 * The gRPC face of the gpu-service: `minicpmv.v1.GenerationService` and `grpc.health.v1`. The only file
 * that imports @minicpmv/proto: requests are validated and converted to engine types on entry, engine
 * events converted back to protobuf messages on exit.
 *
 *   GenerateRequest ─ toEngineRequest (validate, defaults) ─> EngineHandle.generate ─> EngineEvent*
 *   GenerateResponse* <─ toResponse ──────────────────────────────────────────────────┘
 *   client cancel / deadline ─ ctx.signal ─> engine abort (blocks freed before the next step)
 */

import { createHash } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  FinishReason,
  type GenerateRequest,
  type GenerateResponseSchema,
  GenerationService,
  Modality,
  type StructuredOutput,
} from "@minicpmv/proto";
import {
  addService,
  type CallContext,
  createServer,
  GrpcError,
  grpc,
  listen,
  type ServiceImpl,
  shutdown,
} from "@minicpmv/proto/grpc";
import { HealthService, ServingStatus } from "@minicpmv/proto/health";
import type { Tracer } from "@opentelemetry/api";
import type { EngineHandle } from "./engine/engine-handle";
import type {
  EngineErrorKind,
  EngineEvent,
  EngineRequest,
  MediaInput,
  SamplingParams,
  StructuredSpec,
} from "./engine/types";
import type { GpuMetrics } from "./metrics";
import { recordRequestSpans, recordStep, traceLinkOf } from "./tracing";

/**
 * The reference's chat() defaults (MINICPMV26.md §6.5) for parameters a request leaves unset: the sampling
 * preset, and the beam preset for beam search. `temperature: 0` asks for plain greedy decoding (vLLM's and
 * OpenAI's meaning; the reference's greedy run, sampling=False with num_beams=1, used repetition_penalty 1.0),
 * so there the sampling preset's penalty 1.05 does not apply unless the request sets it.
 */
export const REFERENCE_DEFAULTS = {
  temperature: 0.7,
  topP: 0.8,
  topK: 100,
  repetitionPenalty: 1.05,
  maxTokens: 2048,
  /** sampling=False (beam search). */
  beamRepetitionPenalty: 1.2,
  /** temperature 0 without beams. */
  greedyRepetitionPenalty: 1,
} as const;

/** Service limits. */
export interface ServiceLimits {
  /** Largest n and beam width. */
  maxN: number;
}

const bad = (msg: string) => new GrpcError(grpc.status.INVALID_ARGUMENT, msg);

const CODE: Record<EngineErrorKind, grpc.status> = {
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  resource_exhausted: grpc.status.RESOURCE_EXHAUSTED,
  internal: grpc.status.INTERNAL,
  unavailable: grpc.status.UNAVAILABLE,
};

/** Most logit_bias entries one request may carry. */
const MAX_LOGIT_BIAS = 1024;

function range(name: string, v: number, lo: number, hi: number, loOpen = false): number {
  if (!Number.isFinite(v) || (loOpen ? v <= lo : v < lo) || v > hi)
    throw bad(`params.${name}: ${v} must be in ${loOpen ? "(" : "["}${lo}, ${hi}]`);
  return v;
}

/** sha256 over each slice's geometry and pixels (used when the preprocessor sent no content hash). */
export function contentHash(slices: { width: number; height: number; rgb: Uint8Array }[]): string {
  const h = createHash("sha256");
  for (const s of slices) {
    h.update(`${s.width}x${s.height};`);
    h.update(s.rgb);
  }
  return h.digest("hex");
}

/** Validates a GenerateRequest and converts it to an engine request; throws INVALID_ARGUMENT naming the field. */
export function toEngineRequest(req: GenerateRequest, id: string, limits: ServiceLimits): EngineRequest {
  const prompt = req.prompt;
  if (!prompt || prompt.tokenIds.length === 0) throw bad("prompt.token_ids: must not be empty");
  const p = req.params;
  const beamWidth = p?.beamWidth ?? 0;
  if (beamWidth > limits.maxN) throw bad(`params.beam_width: ${beamWidth} exceeds the limit of ${limits.maxN}`);
  const beam = beamWidth > 1;
  const n = Math.max(1, p?.n ?? 0);
  if (n > limits.maxN) throw bad(`params.n: ${n} exceeds the limit of ${limits.maxN}`);
  if (beam && n > beamWidth) throw bad(`params.n: ${n} must not exceed params.beam_width (${beamWidth})`);
  const topK = p?.topK ?? REFERENCE_DEFAULTS.topK;
  if (!Number.isInteger(topK) || topK < -1)
    throw bad(`params.top_k: ${topK} must be -1, 0 (off) or a positive integer`);
  const maxTokens = p?.maxTokens ?? REFERENCE_DEFAULTS.maxTokens;
  if (maxTokens < 1) throw bad(`params.max_tokens: ${maxTokens} must be at least 1`);
  const minTokens = p?.minTokens ?? 0;
  if (minTokens > maxTokens)
    throw bad(`params.min_tokens: ${minTokens} must not exceed params.max_tokens (${maxTokens})`);
  const stop = p?.stop ?? [];
  if (stop.length > 16) throw bad(`params.stop: ${stop.length} strings, the limit is 16`);
  for (const [i, s] of stop.entries()) {
    if (s.length === 0) throw bad(`params.stop[${i}]: must not be empty`);
    if (s.length > 256) throw bad(`params.stop[${i}]: ${s.length} characters, the limit is 256`);
  }
  const topLogprobs = p?.topLogprobs ?? 0;
  if (topLogprobs > 20) throw bad(`params.top_logprobs: ${topLogprobs} exceeds the limit of 20`);
  if (topLogprobs > 0 && !p?.logprobs) throw bad("params.top_logprobs: requires params.logprobs");
  if (beam && stop.length > 0) throw bad("params.stop: not supported with beam search (params.beam_width > 1)");
  const logitBias = new Map<number, number>();
  for (const [key, bias] of Object.entries(p?.logitBias ?? {})) {
    if (!Number.isFinite(bias) || bias < -100 || bias > 100)
      throw bad(`params.logit_bias[${key}]: ${bias} must be in [-100, 100]`);
    logitBias.set(Number(key), bias);
  }
  if (logitBias.size > MAX_LOGIT_BIAS)
    throw bad(`params.logit_bias: ${logitBias.size} entries, the limit is ${MAX_LOGIT_BIAS}`);
  const structured = structuredSpec(p?.structured);
  if (structured) {
    if (beam) throw bad("params.structured: not supported with beam search (params.beam_width > 1)");
    if (p?.ignoreEos) throw bad("params.ignore_eos: not supported with params.structured (the grammar ends the text)");
    if (minTokens > 0)
      throw bad("params.min_tokens: not supported with params.structured (the grammar decides where the text ends)");
  }
  const temperature = beam ? 0 : range("temperature", p?.temperature ?? REFERENCE_DEFAULTS.temperature, 0, 100);
  const defaultPenalty = beam
    ? REFERENCE_DEFAULTS.beamRepetitionPenalty
    : temperature === 0
      ? REFERENCE_DEFAULTS.greedyRepetitionPenalty
      : REFERENCE_DEFAULTS.repetitionPenalty;
  const params: SamplingParams = {
    temperature,
    topP: beam ? 1 : range("top_p", p?.topP ?? REFERENCE_DEFAULTS.topP, 0, 1, true),
    topK: beam ? 0 : Math.max(0, topK),
    minP: beam ? 0 : range("min_p", p?.minP ?? 0, 0, 1),
    repetitionPenalty: range("repetition_penalty", p?.repetitionPenalty ?? defaultPenalty, 0, 10, true),
    presencePenalty: range("presence_penalty", p?.presencePenalty ?? 0, -2, 2),
    frequencyPenalty: range("frequency_penalty", p?.frequencyPenalty ?? 0, -2, 2),
    seed: p?.seed,
    maxTokens,
    minTokens,
    stop,
    stopTokenIds: p?.stopTokenIds ?? [],
    ignoreEos: p?.ignoreEos ?? false,
    n,
    beamWidth: beam ? beamWidth : 1,
    lengthPenalty: range("length_penalty", p?.lengthPenalty ?? 1, -10, 10),
    skipSpecialTokens: p?.skipSpecialTokens ?? false,
    logprobs: p?.logprobs ?? false,
    topLogprobs,
    logitBias,
    structured,
  };
  const media: MediaInput[] = prompt.media.map((m, i) => {
    if (m.modality !== Modality.IMAGE && m.modality !== Modality.VIDEO)
      throw bad(`prompt.media[${i}].modality: must be MODALITY_IMAGE or MODALITY_VIDEO`);
    if (m.slices.length === 0) throw bad(`prompt.media[${i}].slices: must not be empty`);
    const slices = m.slices.map((s) => ({ width: s.width, height: s.height, rgb: s.rgb, tokenOffset: s.tokenOffset }));
    return {
      modality: m.modality === Modality.VIDEO ? "video" : "image",
      contentHash: m.contentHash.length > 0 ? Buffer.from(m.contentHash).toString("hex") : contentHash(slices),
      slices,
    };
  });
  const c = prompt.tokenCounts;
  const total = prompt.tokenIds.length;
  return {
    id,
    prompt: {
      tokenIds: [...prompt.tokenIds],
      media,
      counts: c ? { text: c.text, image: c.image, video: c.video, total } : { text: total, image: 0, video: 0, total },
    },
    params,
    priority: req.priority,
  };
}

/** Most characters of one structured-output spec (a schema, a grammar, a regex, the choices together). */
export const MAX_STRUCTURED_CHARS = 256 * 1024;

/** The domain form of `params.structured` (undefined: unconstrained). */
function structuredSpec(s: StructuredOutput | undefined): StructuredSpec | undefined {
  const k = s?.kind;
  if (!k || k.case === undefined) return undefined;
  const size = (what: string, n: number) => {
    if (n > MAX_STRUCTURED_CHARS)
      throw bad(`params.structured.${what}: ${n} characters, the limit is ${MAX_STRUCTURED_CHARS}`);
  };
  switch (k.case) {
    case "jsonSchema":
      size("json_schema", k.value.length);
      try {
        JSON.parse(k.value);
      } catch (err) {
        throw bad(`params.structured.json_schema: not valid JSON (${(err as Error).message})`);
      }
      return { kind: "json_schema", schema: k.value };
    case "jsonObject":
      return { kind: "json_object" };
    case "regex":
      size("regex", k.value.length);
      if (k.value.length === 0) throw bad("params.structured.regex: must not be empty");
      return { kind: "regex", pattern: k.value };
    case "choice": {
      const choices = k.value.values;
      if (choices.length === 0) throw bad("params.structured.choice: must hold at least one string");
      size(
        "choice",
        choices.reduce((n, c) => n + c.length, 0),
      );
      return { kind: "choice", choices: [...choices] };
    }
    case "grammar":
      size("grammar", k.value.length);
      if (k.value.trim().length === 0) throw bad("params.structured.grammar: must not be empty");
      return { kind: "grammar", ebnf: k.value };
    case "structuralTag":
      size("structural_tag", k.value.length);
      return { kind: "structural_tag", tag: k.value };
  }
}

const FINISH: Record<string, FinishReason> = {
  stop: FinishReason.STOP,
  length: FinishReason.LENGTH,
  abort: FinishReason.ABORT,
};

const utf8 = new TextDecoder();

/** One engine event as a GenerateResponse (errors are thrown as gRPC statuses). */
export function toResponse(ev: EngineEvent): MessageInitShape<typeof GenerateResponseSchema> {
  switch (ev.type) {
    case "token": {
      const lp = (t: { tokenId: number; logprob: number; bytes: Uint8Array }) => ({
        tokenId: t.tokenId,
        logprob: t.logprob,
        bytes: t.bytes,
        token: utf8.decode(t.bytes),
      });
      return {
        event: {
          case: "token",
          value: {
            index: ev.index,
            tokenIds: ev.tokenIds,
            text: ev.text,
            logprobs: (ev.logprobs ?? []).map((l) => ({ chosen: lp(l.chosen), top: l.top.map(lp) })),
          },
        },
      };
    }
    case "choice_end":
      return {
        event: {
          case: "choiceEnd",
          value: { index: ev.index, finishReason: FINISH[ev.finishReason], stopReason: ev.stopReason },
        },
      };
    case "final":
      return {
        event: {
          case: "final",
          value: {
            usage: {
              promptTokens: ev.usage.promptTokens,
              promptTokensByModality: ev.usage.promptCounts,
              cachedPromptTokens: ev.usage.cachedPromptTokens,
              completionTokens: ev.usage.completionTokens,
            },
            timings: ev.timings,
          },
        },
      };
    case "error":
      throw new GrpcError(CODE[ev.kind], ev.message);
  }
}

/** GenerationService handlers over an engine. */
export function generationService(
  engine: EngineHandle,
  limits: ServiceLimits,
  opts: AttachOptions = {},
): ServiceImpl<typeof GenerationService.method> {
  const metrics = opts.metrics;
  const tracer = opts.tracer;
  const modelName = opts.modelName ?? engine.info.modelName;
  if (tracer) engine.onStep = (rec) => recordStep(tracer, rec);
  let seq = 0;
  return {
    async *generate(req: GenerateRequest, ctx: CallContext) {
      // NOTE: the caller's request_id may repeat (retries); the engine gets a unique one.
      const id = `${req.requestId || "req"}#${seq++}`;
      const engineReq = toEngineRequest(req, id, limits);
      if (tracer) engineReq.trace = traceLinkOf(ctx.traceContext);
      const obs = metrics?.observe();
      const reasons: ("stop" | "length" | "abort")[] = [];
      for await (const ev of engine.generate(engineReq, ctx.signal)) {
        if (ev.type === "token") obs?.tokens(ev.tokenIds.length);
        else if (ev.type === "choice_end") reasons.push(ev.finishReason);
        else if (ev.type === "final") {
          obs?.finished(ev.usage, ev.timings, reasons);
          if (tracer && ev.timeline) {
            recordRequestSpans(tracer, ctx.traceContext, ev.timeline, ev.usage, {
              "request.id": req.requestId,
              "gen_ai.request.model": modelName,
            });
          }
        } else if (ev.type === "error") obs?.failed(ev.kind);
        if (ctx.signal.aborted) continue; // drain to the engine's final event; the client is gone
        yield toResponse(ev);
      }
    },
    async info() {
      const i = engine.info;
      // NOTE: answered from what this thread already holds; waiting on the engine's thread would make a busy
      // replica look dead to the edge's poll.
      const s = engine.snapshot ? engine.snapshot() : await engine.stats().catch(() => undefined);
      return {
        modelName,
        contextLength: i.contextLength,
        blockSize: i.blockSize,
        kvCapacityBlocks: i.numBlocks,
        kvUsedBlocks: s?.kvUsedBlocks ?? 0,
        queueDepth: s?.waiting ?? 0,
        running: s?.running ?? 0,
        queryNum: i.queryNum,
        ready: s !== undefined,
      };
    },
  };
}

/** What `startGrpcServer` needs. */
export interface GrpcServerOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  limits: ServiceLimits;
}

/** Optional parts of serving an engine. */
export interface AttachOptions {
  /** Per-request metrics. */
  metrics?: GpuMetrics;
  /** Model name reported by Info (default: the engine's). */
  modelName?: string;
  /** Set when tracing is on: stage spans per request and one linked span per engine step. */
  tracer?: Tracer | undefined;
}

/** A started gRPC server with its health service. */
export interface GpuGrpcServer {
  port: number;
  health: HealthService;
  /** Marks the service serving (the model is loaded) or not. */
  setServing(serving: boolean): void;
  /** Attaches the engine; until then Generate and Info answer UNAVAILABLE. */
  attach(engine: EngineHandle, opts?: AttachOptions): void;
  /** Stops accepting calls, lets in-flight ones finish for `graceMs`, then cancels the rest. */
  stop(graceMs: number): Promise<void>;
}

/** Starts the gRPC server: health (NOT_SERVING until `setServing(true)`) and GenerationService. */
export async function startGrpcServer(opts: GrpcServerOptions): Promise<GpuGrpcServer> {
  const server = createServer({ maxMessageBytes: opts.maxMessageBytes });
  const health = new HealthService([GenerationService.typeName]);
  health.register(server);
  let impl: ServiceImpl<typeof GenerationService.method> | undefined;
  const notReady = () => new GrpcError(grpc.status.UNAVAILABLE, "the model is still loading");
  addService(server, GenerationService, {
    generate: (req, ctx) => {
      if (!impl) throw notReady();
      return impl.generate(req, ctx);
    },
    info: async (req, ctx) => {
      if (!impl) throw notReady();
      return impl.info(req, ctx);
    },
  });
  const port = await listen(server, opts.host, opts.port);
  return {
    port,
    health,
    setServing: (serving) => health.setAll(serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING),
    attach: (engine, attachOpts) => {
      impl = generationService(engine, opts.limits, attachOpts);
    },
    stop: (graceMs) => shutdown(server, graceMs),
  };
}
