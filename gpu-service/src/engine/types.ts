/**
 * Domain types of the engine: what a request looks like once it has left the wire format, what the engine
 * reports back, and the narrow views of the model layer and the tokenizer that the engine drives.
 *
 * NOTE: `EngineModel` is structurally the model layer's `ModelRunner` (gpu-service/src/model); the engine
 * declares only what it calls, so the bookkeeping can be tested with an in-test fake and no ONNX Runtime.
 */

export type { SeqStep, SliceInput } from "../model/types";

/** What the engine needs to know about the loaded model. */
export interface EngineModelInfo {
  modelName: string;
  hiddenSize: number;
  vocabSize: number;
  blockSize: number;
  numBlocks: number;
  /** Visual tokens per slice (64). */
  queryNum: number;
  contextLength: number;
  kvBytesPerToken: number;
}

import type { SeqStep, SliceInput } from "../model/types";

/** The model layer as the engine drives it (structurally `ModelRunner`). */
export interface EngineModel {
  readonly info: EngineModelInfo;
  /** Vision tower + resampler: one [queryNum*hidden] array per slice. */
  encodeSlices(slices: SliceInput[]): Promise<Float32Array[]>;
  /** Runs one batched step; logits [vocab] per sequence that wanted them, else null. */
  step(seqs: SeqStep[]): Promise<(Float32Array | null)[]>;
  /** Copies one physical KV block into another (copy-on-write). */
  copyBlock(src: number, dst: number): void;
  dispose(): Promise<void>;
}

/** The tokenizer as the engine needs it: raw bytes of one token (special tokens as their literal text). */
export interface TokenBytes {
  tokenBytes(id: number): Uint8Array;
  /** Whether `id` is a special added token (absent: none is). */
  isSpecial?(id: number): boolean;
}

/** One image or video frame of a prompt. */
export interface MediaInput {
  modality: "image" | "video";
  /** Hex content hash; equal hashes mean equal vision embeddings. */
  contentHash: string;
  /** Slices with the index of their first placeholder token in the prompt. */
  slices: (SliceInput & { tokenOffset: number })[];
}

/** Prompt token counts by modality (as the preprocessor counted them). */
export interface PromptCounts {
  text: number;
  image: number;
  video: number;
  total: number;
}

/** A prompt ready for the engine. */
export interface PromptInput {
  tokenIds: number[];
  media: MediaInput[];
  counts: PromptCounts;
}

/** Fully resolved sampling and stopping parameters (defaults applied, limits checked). */
export interface SamplingParams {
  /** 0 means greedy. */
  temperature: number;
  topP: number;
  /** 0 disables. */
  topK: number;
  minP: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  /** Seed as a bigint (64 bit); undefined draws a random one. */
  seed: bigint | undefined;
  maxTokens: number;
  minTokens: number;
  stop: string[];
  stopTokenIds: number[];
  ignoreEos: boolean;
  n: number;
  /** > 1 selects beam search. */
  beamWidth: number;
  /** Beam search: hypotheses are ranked by summed log-probs / length^lengthPenalty. */
  lengthPenalty: number;
  /** Leave special tokens out of the text (vLLM's skip_special_tokens; the reference keeps them). */
  skipSpecialTokens: boolean;
  logprobs: boolean;
  topLogprobs: number;
  /** Added to these token ids' logits before the penalties (OpenAI's logit_bias); ids are inside the vocabulary. */
  logitBias: ReadonlyMap<number, number>;
  /** Constrained decoding: what the generated text must match (compiled before the request is admitted). */
  structured?: StructuredSpec | undefined;
}

/** What a constrained completion must match. */
export type StructuredSpec =
  | { kind: "json_schema"; schema: string }
  | { kind: "json_object" }
  | { kind: "regex"; pattern: string }
  | { kind: "choice"; choices: string[] }
  | { kind: "grammar"; ebnf: string }
  | { kind: "structural_tag"; tag: string };

/**
 * One sequence's grammar state: which tokens may come next, and advancing by the sampled one.
 * Bitmask layout (xgrammar's): token `id` is allowed when bit `id & 31` of word `id >> 5` is set.
 */
export interface TokenMatcher {
  nextMask(): Promise<Int32Array>;
  /** Advances by `id`; false when the grammar does not allow it (a bug: the mask forbade it). */
  accept(id: number): boolean;
  /** Frees the state (idempotent). */
  dispose(): void;
}

/** A compiled grammar: makes matchers, one per sequence. */
export interface Constraint {
  /** A fresh matcher; `stopIds` end the text once the grammar is complete. */
  matcher(stopIds: readonly number[]): Promise<TokenMatcher>;
}

/** W3C ids of the span a request's engine work belongs to; set only when tracing is on. */
export interface TraceLink {
  traceId: string;
  spanId: string;
  traceFlags: number;
}

/** A request as the engine takes it. */
export interface EngineRequest {
  id: string;
  prompt: PromptInput;
  params: SamplingParams;
  /** Lower is served first and preempted last. */
  priority: number;
  /** Tracing on: the engine records this request's {@link RequestTimeline} and links its steps here. */
  trace?: TraceLink | undefined;
  /** The compiled `params.structured` (set by the engine handle before `Engine.add`; never crosses threads). */
  constraint?: Constraint | undefined;
}

/** One vision-embedding lookup of a traced request (epoch ms). */
export interface VisionRecord {
  start: number;
  end: number;
  slices: number;
  /** Found in the encoder cache (encoded by an earlier request): nothing ran. */
  cacheHit: boolean;
}

/**
 * When each stage of a traced request ran, in epoch milliseconds (comparable across threads), for spans
 * made on the gRPC thread with explicit times.
 */
export interface RequestTimeline {
  arrivedAt: number;
  /** First scheduled (end of the queue wait); undefined if never scheduled (aborted while waiting). */
  scheduledAt: number | undefined;
  firstTokenAt: number | undefined;
  lastTokenAt: number | undefined;
  endedAt: number;
  vision: VisionRecord[];
}

/** One engine step that ran traced requests (epoch ms); it links to each of their spans. */
export interface StepRecord {
  start: number;
  end: number;
  /** Sequences in the batch (traced or not). */
  seqs: number;
  /** Tokens computed in the step. */
  tokens: number;
  /** Sequences of the batch still in their prompt (prefill chunks). */
  prefillSeqs: number;
  links: TraceLink[];
}

/** Log probability of one token. */
export interface TokenLogprob {
  tokenId: number;
  logprob: number;
  bytes: Uint8Array;
}

/** One generated position: the chosen token and the most likely alternatives. */
export interface PositionLogprobs {
  chosen: TokenLogprob;
  top: TokenLogprob[];
}

export type FinishReason = "stop" | "length" | "abort";

/** Token usage of a request. */
export interface Usage {
  promptTokens: number;
  promptCounts: PromptCounts;
  cachedPromptTokens: number;
  completionTokens: number;
}

/** Where a request's time went, in milliseconds. */
export interface Timings {
  queueMs: number;
  visionEncodeMs: number;
  prefillMs: number;
  decodeMs: number;
}

/** Per-request error kinds; each maps to one gRPC code in the service. */
export type EngineErrorKind = "invalid_argument" | "resource_exhausted" | "internal" | "unavailable";

/** What the engine reports about a request, in order; `final` or `error` is always last. */
export type EngineEvent =
  | {
      type: "token";
      index: number;
      tokenIds: number[];
      text: string;
      logprobs?: PositionLogprobs[];
    }
  | { type: "choice_end"; index: number; finishReason: FinishReason; stopReason: string }
  | { type: "final"; usage: Usage; timings: Timings; timeline?: RequestTimeline }
  | { type: "error"; kind: EngineErrorKind; message: string };

/** Engine counters and gauges (cumulative counters since start). */
export interface EngineStats {
  running: number;
  waiting: number;
  kvTotalBlocks: number;
  kvUsedBlocks: number;
  kvCachedBlocks: number;
  kvUsage: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  encoderCacheQueries: number;
  encoderCacheHits: number;
  encoderCacheBytes: number;
  preemptions: number;
  steps: number;
  promptTokensComputed: number;
  generationTokens: number;
}

/** A per-request failure (bad input, does not fit); the engine keeps running. */
export class RequestError extends Error {
  override readonly name = "RequestError";
  constructor(
    readonly kind: EngineErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** A broken invariant: the engine must stop, its KV state can no longer be trusted. */
export class EngineDeadError extends Error {
  override readonly name = "EngineDeadError";
}
