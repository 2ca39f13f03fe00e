/**
 * The edge's view of its two backends, as plain domain types. The gRPC clients in this folder convert
 * to and from protobuf; everything else in the edge (and every unit test's fake) sees only these.
 */

/** Where an image comes from: inline bytes (decoded data URL) or an http(s) URL the preprocess service fetches. */
export type ImageSource = { kind: "data"; data: Uint8Array } | { kind: "url"; url: string };

/** Where a video comes from: bytes, a URL, or frames the client sampled already (each an encoded image). */
export type VideoSource =
  | { kind: "data"; data: Uint8Array }
  | { kind: "url"; url: string }
  | { kind: "frames"; frames: Uint8Array[] };

/** One part of a chat message. */
export type ContentPart =
  | { kind: "text"; text: string }
  | { kind: "image"; source: ImageSource }
  | { kind: "video"; source: VideoSource };

/** One chat message. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  parts: ContentPart[];
}

/** Per-request preprocessing options; unset fields take the checkpoint's defaults. */
export interface PrepareOptions {
  maxSliceNums?: number;
  useImageId?: boolean;
  videoFps?: number;
  videoMaxFrames?: number;
  videoMaxSliceNums?: number;
  /** Reject prompts longer than this (0: the preprocess service's own limit). */
  maxPromptTokens?: number;
}

/**
 * Input of PreprocessService.Prepare: a chat (`messages`), or for legacy completions a prompt given as text
 * (`rawPrompt`, no chat template; special-token strings are special tokens) or as token ids
 * (`promptTokenIds`) with `messages` empty.
 */
export interface PrepareInput {
  requestId: string;
  messages: ChatMessage[];
  rawPrompt?: string;
  promptTokenIds?: number[];
  options: PrepareOptions;
  addGenerationPrompt: boolean;
}

/** Prompt tokens by modality. */
export interface TokenCounts {
  text: number;
  image: number;
  video: number;
  total: number;
}

/** One slice of an image or frame. */
export interface Slice {
  width: number;
  height: number;
  /** uint8 RGB, width*height*3 bytes. */
  rgb: Uint8Array;
  /** Index in the token ids of the slice's first placeholder token. */
  tokenOffset: number;
}

/** One image or video frame cut into slices. */
export interface MediaItem {
  modality: "image" | "video";
  contentHash: Uint8Array;
  slices: Slice[];
  sourceWidth: number;
  sourceHeight: number;
  gridCols: number;
  gridRows: number;
}

/** A prompt ready for the model. */
export interface PreparedPrompt {
  tokenIds: number[];
  media: MediaItem[];
  tokenCounts: TokenCounts;
  promptText: string;
}

/** Sampling and stopping parameters; unset fields take the gpu-service's (reference chat()) defaults. */
export interface GenerationParams {
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  seed?: number;
  maxTokens?: number;
  minTokens: number;
  stop: string[];
  stopTokenIds: number[];
  ignoreEos: boolean;
  n: number;
  beamWidth: number;
  logprobs: boolean;
  topLogprobs: number;
  /** Leave special tokens out of the text (vLLM's skip_special_tokens; unset keeps them, as the reference). */
  skipSpecialTokens?: boolean;
  /** Beam search length penalty (vLLM's length_penalty). */
  lengthPenalty?: number;
  /** OpenAI's logit_bias: token id -> bias in [-100, 100]. */
  logitBias?: Record<number, number>;
  /** Constrained decoding: what the text must match (the gpu-service compiles it into a grammar). */
  structured?: StructuredSpec;
}

/** What a constrained completion must match. */
export type StructuredSpec =
  | { kind: "json_schema"; schema: string }
  | { kind: "json_object" }
  | { kind: "regex"; pattern: string }
  | { kind: "choice"; choices: string[] }
  | { kind: "grammar"; ebnf: string }
  | { kind: "structural_tag"; tag: string };

/** Input of GenerationService.Generate. */
export interface GenerateInput {
  requestId: string;
  prompt: PreparedPrompt;
  params: GenerationParams;
  priority: number;
}

/** A token with its log probability. */
export interface TokenLogprobEntry {
  tokenId: number;
  token: string;
  logprob: number;
  bytes: Uint8Array;
}

/** The chosen token at one position plus the most likely alternatives. */
export interface TokenLogprob {
  chosen: TokenLogprobEntry;
  top: TokenLogprobEntry[];
}

/** Why a completion ended. */
export type FinishReason = "stop" | "length" | "abort";

/** Token usage of a request. */
export interface Usage {
  promptTokens: number;
  promptTokensByModality: TokenCounts;
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

/** One event of a Generate stream. */
export type GenerateEvent =
  | { type: "token"; index: number; tokenIds: number[]; text: string; logprobs: TokenLogprob[] }
  | { type: "choice_end"; index: number; finishReason: FinishReason; stopReason: string }
  | { type: "final"; usage: Usage; timings: Timings };

/** A gpu-service replica's description and load. */
export interface BackendInfo {
  modelName: string;
  contextLength: number;
  blockSize: number;
  kvCapacityBlocks: number;
  kvUsedBlocks: number;
  queueDepth: number;
  running: number;
  queryNum: number;
  ready: boolean;
}

/** Per-call options: cancellation, deadline and the request id sent as `x-request-id` metadata. */
export interface CallOpts {
  signal?: AbortSignal | undefined;
  /** Absolute deadline. */
  deadline?: Date | undefined;
  requestId?: string | undefined;
}

/**
 * The preprocess service. Errors are thrown as `EdgeError` (see ../errors).
 */
export interface PreprocessBackend {
  prepare(input: PrepareInput, opts: CallOpts): Promise<PreparedPrompt>;
  /** True when the service's grpc.health.v1 status is SERVING. */
  healthy(opts: CallOpts): Promise<boolean>;
}

/**
 * One gpu-service replica. Errors are thrown as `EdgeError` (see ../errors).
 */
export interface GenerationBackend {
  /** host:port, used in logs and metric labels. */
  readonly address: string;
  generate(input: GenerateInput, opts: CallOpts): AsyncIterable<GenerateEvent>;
  info(opts: CallOpts): Promise<BackendInfo>;
  /** True when the replica's grpc.health.v1 status is SERVING. */
  healthy(opts: CallOpts): Promise<boolean>;
}
