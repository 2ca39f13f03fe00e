/** Domain types of the preprocess service (the gRPC layer converts to and from these). */

import type { Grid } from "./image/slice";

/** Who wrote a message. */
export type Role = "system" | "user" | "assistant";

/** Encoded media given inline or by URL. */
export type MediaSource = { readonly data: Uint8Array } | { readonly url: string };

/** A video: encoded bytes, a URL, or frames the client already sampled (each an encoded image). */
export type VideoSource = MediaSource | { readonly frames: readonly Uint8Array[] };

/** One part of a message. */
export type ContentPart =
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "image"; readonly source: MediaSource }
  | { readonly type: "video"; readonly source: VideoSource };

/** One chat message. */
export interface ChatTurn {
  readonly role: Role;
  readonly parts: readonly ContentPart[];
}

/** Per-request options; unset fields take the checkpoint's or the service's defaults. */
export interface PrepareOptions {
  /** Slices per still image (reference default 9). */
  readonly maxSliceNums?: number | undefined;
  /** `<image_id>i</image_id>` before each still image (reference default true). */
  readonly useImageId?: boolean | undefined;
  /** Video frames sampled per second (reference: 1). */
  readonly videoFps?: number | undefined;
  /** Most frames per video (reference: 64). */
  readonly videoMaxFrames?: number | undefined;
  /** Slices per video frame (reference: 2). */
  readonly videoMaxSliceNums?: number | undefined;
  /** Reject prompts longer than this (unset or 0: the service limit; never above it). */
  readonly maxPromptTokens?: number | undefined;
}

/**
 * A Prepare call. Exactly one prompt form: `messages` (non-empty, rendered with the chat template),
 * `rawPrompt` (legacy completions: tokenised as is, special-token strings are special tokens, no BOS),
 * or `promptTokenIds` (non-empty, the prompt as ids). Raw and id prompts carry no media.
 */
export interface PrepareRequest {
  readonly requestId?: string | undefined;
  readonly messages: readonly ChatTurn[];
  /** Text tokenised without the chat template (special-token strings become their ids). */
  readonly rawPrompt?: string | undefined;
  /** The prompt as token ids, each below the vocabulary size. */
  readonly promptTokenIds?: readonly number[] | undefined;
  readonly options?: PrepareOptions | undefined;
  /** Append `<|im_start|>assistant\n` (true for generation; chat messages only). */
  readonly addGenerationPrompt: boolean;
}

/** Where a media item came from. */
export type Modality = "image" | "video";

/** One slice ready for the vision tower. */
export interface PreparedSlice {
  readonly width: number;
  readonly height: number;
  /** uint8 RGB, row-major, width*height*3 bytes. */
  readonly rgb: Uint8Array;
  /** Index in tokenIds of the slice's first `<unk>`; 64 follow. */
  readonly tokenOffset: number;
}

/** One image or video frame. */
export interface PreparedMedia {
  readonly modality: Modality;
  /** sha256 over the slices' sizes and pixels. */
  readonly contentHash: Uint8Array;
  readonly slices: readonly PreparedSlice[];
  readonly sourceWidth: number;
  readonly sourceHeight: number;
  /** The grid the pixels were cut with; null when unsliced. */
  readonly grid: Grid | null;
}

/** Prompt tokens by the modality they come from. */
export interface TokenCounts {
  /** Chat template, text and everything that is not a media placeholder. */
  readonly text: number;
  /** Placeholder tokens of still images, with their tags and id tags. */
  readonly image: number;
  /** Placeholder tokens of video frames, with their tags. */
  readonly video: number;
  readonly total: number;
}

/** The result of `prepare()`. */
export interface PreparedPrompt {
  readonly tokenIds: number[];
  readonly media: PreparedMedia[];
  readonly tokenCounts: TokenCounts;
  /** The rendered prompt (user text shown as typed). */
  readonly promptText: string;
}
