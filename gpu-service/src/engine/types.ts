/**
 * Domain types of the engine: what a request looks like once it has left the wire format, what the engine
 * reports back, and the narrow views of the model layer and the tokenizer that the engine drives.
 *
 * NOTE: `EngineModel` is structurally the model layer's `ModelRunner` (gpu-service/src/model); the engine
 * declares only what it calls, so the bookkeeping can be tested with an in-test fake and no ONNX Runtime.
 */

/** One slice of an image or video frame, as the vision tower takes it. */
export interface SliceInput {
  width: number;
  height: number;
  /** uint8 RGB, row-major, width*height*3 bytes. */
  rgb: Uint8Array;
}

/** One sequence's work in a model step. */
export interface SeqStep {
  /** The new tokens to run, at positions pastLen..pastLen+tokenIds.length-1. */
  tokenIds: ArrayLike<number>;
  /** Tokens already in the KV cache for this sequence. */
  pastLen: number;
  /** Physical KV blocks covering positions 0..pastLen+tokenIds.length-1, in order. */
  blockTable: ArrayLike<number>;
  /** Vision embeddings replacing token embeddings: rows start at `offset` within this step's tokenIds. */
  embeds?: { offset: number; rows: Float32Array }[];
  /** Whether logits of the last new token are needed. */
  wantLogits: boolean;
}

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
  logprobs: boolean;
  topLogprobs: number;
}

/** A request as the engine takes it. */
export interface EngineRequest {
  id: string;
  prompt: PromptInput;
  params: SamplingParams;
  /** Lower is served first and preempted last. */
  priority: number;
}

/** Log probability of one token. */
export interface TokenLogprob {
  tokenId: number;
  logprob: number;
  bytes: Uint8Array;
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
      logprobs?: { chosen: TokenLogprob; top: TokenLogprob[] }[];
    }
  | { type: "choice_end"; index: number; finishReason: FinishReason; stopReason: string }
  | { type: "final"; usage: Usage; timings: Timings }
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
