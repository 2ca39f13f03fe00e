/**
 * Per-request and per-sequence engine state. A request starts with one sequence (its prompt); n > 1 forks
 * it into n sequences when the prompt's logits exist, and beam search keeps one sequence per live beam.
 */

import type { BeamSearch } from "./beam-search";
import type { MediaSpan } from "./kv-cache-manager";
import type { OutputText } from "./output-text";
import type { Rng } from "./sampler";
import type { SchedGroup, SchedSeq } from "./scheduler";
import type {
  EngineEvent,
  EngineRequest,
  MediaInput,
  PositionLogprobs,
  SamplingParams,
  TokenMatcher,
  VisionRecord,
} from "./types";

/** One sequence: the prompt plus one completion (or one beam). */
export class Seq implements SchedSeq {
  blockTable: number[] = [];
  blockHashes: string[] = [];
  numComputed = 0;
  numCachedBlocks = 0;
  /** Beam search: sum of processed log-probs of the generated tokens. */
  beamScore = 0;
  /** Beam search: logits waiting for the sibling beams to catch up. */
  pendingLogits: Float32Array | null = null;
  /** Beam search with logprobs: one entry per generated token (copied when the beam forks). */
  beamLogprobs: PositionLogprobs[] = [];
  /** Constrained decoding: this sequence's grammar state (made before its first sample, freed when it ends). */
  matcher: TokenMatcher | null = null;

  constructor(
    readonly seqId: number,
    /** Completion index (0..n-1); beams use 0. */
    readonly index: number,
    readonly tokens: number[],
    readonly promptLen: number,
    readonly mediaSpans: readonly MediaSpan[],
    readonly rng: Rng,
    readonly text: OutputText | null,
  ) {}

  /** Tokens generated so far. */
  get numGenerated(): number {
    return this.tokens.length - this.promptLen;
  }

  /** The generated tokens. */
  generated(): number[] {
    return this.tokens.slice(this.promptLen);
  }
}

/** Engine-side state of one request. */
export class RequestState implements SchedGroup<Seq> {
  seqs: Seq[] = [];
  preemptions = 0;
  /** Whether n > 1 has forked the prompt sequence already. */
  forked = false;
  /** Beam search state when beam_width > 1. */
  /** Beam search; a hypothesis carries its tokens' logprobs when the request asked for them. */
  beam: BeamSearch<PositionLogprobs[]> | null = null;
  /** Constrained decoding with n > 1: matchers made ahead for the sequences the prompt forks into. */
  spareMatchers: TokenMatcher[] = [];
  /** Vision embeddings this request still needs, by content hash. */
  readonly embeds = new Map<string, Float32Array[]>();
  /** Images being encoded a few slices per step: the slices' embeddings so far and when the first began. */
  readonly partialEmbeds = new Map<string, { arrays: Float32Array[]; start: number }>();
  /** Last placeholder position + 1 (0 without media); set by the engine. */
  mediaEnd = 0;
  cachedPromptTokens = 0;
  completionTokens = 0;
  choicesEnded = 0;
  readonly arrivedAt: number;
  firstScheduledAt: number | undefined;
  firstTokenAt: number | undefined;
  lastTokenAt: number | undefined;
  visionMs = 0;
  /** Vision lookups, recorded only for traced requests. */
  readonly vision: VisionRecord[] | undefined;

  constructor(
    readonly req: EngineRequest,
    readonly arrival: number,
    readonly emit: (ev: EngineEvent) => void,
    now: number,
  ) {
    this.arrivedAt = now;
    this.vision = req.trace ? [] : undefined;
  }

  get id(): string {
    return this.req.id;
  }

  get priority(): number {
    return this.req.priority;
  }

  get params(): SamplingParams {
    return this.req.params;
  }

  get media(): MediaInput[] {
    return this.req.prompt.media;
  }

  get promptLen(): number {
    return this.req.prompt.tokenIds.length;
  }
}
