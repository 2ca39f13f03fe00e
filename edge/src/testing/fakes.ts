/**
 * In-process fakes of the two backends, for unit tests and the edge benchmark only (never used by main.ts).
 * They follow the contract's behaviour closely enough to exercise the edge: token counts by modality,
 * n choices, logprobs, usage, cancellation through the AbortSignal, scripted failures.
 */

import type {
  BackendInfo,
  CallOpts,
  GenerateEvent,
  GenerateInput,
  GenerationBackend,
  PreparedPrompt,
  PrepareInput,
  PreprocessBackend,
} from "../backends/types";
import { backendError, EdgeError } from "../errors";

/** Tokens the fake preprocess counts per image or video frame (64 placeholders + <image></image>). */
export const FAKE_TOKENS_PER_IMAGE = 66;
/** Template tokens the fake adds per message. */
export const FAKE_TOKENS_PER_MESSAGE = 5;
/** The fake preprocess rejects prompt token ids from here on (MiniCPM-V 2.6's vocabulary size). */
export const FAKE_VOCAB_SIZE = 151666;

function words(s: string): number {
  return s.split(/\s+/).filter(Boolean).length;
}

/** Fake PreprocessService: counts words as text tokens, 66 tokens per image or frame, one 14x14 slice each. */
export class FakePreprocess implements PreprocessBackend {
  calls: PrepareInput[] = [];
  metas: CallOpts[] = [];
  fail: EdgeError | undefined;
  up = true;

  async prepare(input: PrepareInput, opts: CallOpts): Promise<PreparedPrompt> {
    this.calls.push(input);
    this.metas.push(opts);
    if (this.fail) throw this.fail;
    if (input.rawPrompt !== undefined || input.promptTokenIds !== undefined) return this.legacy(input);
    let text = 0;
    let image = 0;
    let video = 0;
    const media: PreparedPrompt["media"] = [];
    const slice = () => ({ width: 14, height: 14, rgb: new Uint8Array(14 * 14 * 3), tokenOffset: 0 });
    for (const m of input.messages) {
      text += FAKE_TOKENS_PER_MESSAGE;
      for (const p of m.parts) {
        if (p.kind === "text") text += words(p.text);
        else if (p.kind === "image") {
          image += FAKE_TOKENS_PER_IMAGE;
          media.push({
            modality: "image",
            contentHash: new Uint8Array(32),
            slices: [slice()],
            sourceWidth: 14,
            sourceHeight: 14,
            gridCols: 0,
            gridRows: 0,
          });
        } else {
          const frames = p.source.kind === "frames" ? p.source.frames.length : (input.options.videoMaxFrames ?? 4);
          video += frames * FAKE_TOKENS_PER_IMAGE;
          for (let f = 0; f < frames; f++)
            media.push({
              modality: "video",
              contentHash: new Uint8Array(32),
              slices: [slice()],
              sourceWidth: 14,
              sourceHeight: 14,
              gridCols: 0,
              gridRows: 0,
            });
        }
      }
    }
    const total = text + image + video;
    const max = input.options.maxPromptTokens ?? 0;
    if (max > 0 && total > max) {
      throw new EdgeError("context_too_long", `prompt has ${total} tokens, more than max_prompt_tokens ${max}`, {
        param: "messages",
      });
    }
    return {
      tokenIds: Array.from({ length: total }, (_, i) => i),
      media,
      tokenCounts: { text, image, video, total },
      promptText: input.messages.map((m) => `<|im_start|>${m.role}`).join("\n"),
    };
  }

  /**
   * Legacy completions: a raw prompt counts one token per word (ids 0..k-1) and is its own prompt text; token
   * ids are kept, must be below FAKE_VOCAB_SIZE, and read back as "t<id>" words.
   */
  private legacy(input: PrepareInput): PreparedPrompt {
    let tokenIds: number[];
    let promptText: string;
    if (input.rawPrompt !== undefined) {
      tokenIds = Array.from({ length: words(input.rawPrompt) }, (_, i) => i);
      promptText = input.rawPrompt;
    } else {
      tokenIds = [...(input.promptTokenIds ?? [])];
      tokenIds.forEach((id, i) => {
        if (id >= FAKE_VOCAB_SIZE) {
          throw backendError(
            "preprocess",
            "INVALID_ARGUMENT",
            `prompt_token_ids[${i}]: ${id} is outside the vocabulary (0..${FAKE_VOCAB_SIZE - 1})`,
          );
        }
      });
      promptText = tokenIds.map((id) => `t${id}`).join(" ");
    }
    const total = tokenIds.length;
    if (total === 0) throw backendError("preprocess", "INVALID_ARGUMENT", "raw_prompt must not be empty");
    return { tokenIds, media: [], tokenCounts: { text: total, image: 0, video: 0, total }, promptText };
  }

  async healthy(): Promise<boolean> {
    return this.up;
  }
}

/** How a FakeGpu call should behave. */
export interface FakeGpuScript {
  /** Throw this before the first event. */
  failBeforeFirst?: EdgeError;
  /** Throw `error` after this many token events. */
  failAfter?: { tokens: number; error: EdgeError };
  /** After the first token, wait until the call is cancelled. */
  hangAfterFirst?: boolean;
  /** Milliseconds to wait before each token event (0: yield to the event loop only). */
  tokenDelayMs?: number;
  /** Every choice sends these texts as its tokens, then ends with finish reason "stop". */
  texts?: string[];
}

/**
 * Fake gpu-service replica. Choice i's tokens are "w<seed+i+k> " for k = 0..max_tokens-1 (default 4 tokens,
 * seed 0), so the same seed gives the same text; the finish reason is "length".
 */
export class FakeGpu implements GenerationBackend {
  calls: GenerateInput[] = [];
  metas: CallOpts[] = [];
  script: FakeGpuScript = {};
  up = true;
  cancelled = 0;
  open = 0;
  info_: BackendInfo = {
    modelName: "openbmb/MiniCPM-V-2_6",
    contextLength: 4096,
    blockSize: 16,
    kvCapacityBlocks: 1000,
    kvUsedBlocks: 0,
    queueDepth: 0,
    running: 0,
    queryNum: 64,
    ready: true,
  };

  constructor(readonly address = "fake-gpu:1") {}

  async *generate(input: GenerateInput, opts: CallOpts): AsyncGenerator<GenerateEvent> {
    this.calls.push(input);
    this.metas.push(opts);
    this.open++;
    const s = this.script;
    const signal = opts.signal;
    const check = () => {
      if (signal?.aborted) {
        this.cancelled++;
        throw new EdgeError("cancelled", `${this.address}: the client cancelled the call`);
      }
    };
    try {
      if (!this.up) throw new EdgeError("unavailable", `${this.address}: connection refused`);
      if (s.failBeforeFirst) throw s.failBeforeFirst;
      const p = input.params;
      const n = p.n || 1;
      if (s.texts) {
        for (const [k, text] of s.texts.entries())
          for (let i = 0; i < n; i++) yield { type: "token", index: i, tokenIds: [k], text, logprobs: [] };
        for (let i = 0; i < n; i++) yield { type: "choice_end", index: i, finishReason: "stop", stopReason: "" };
        const c = input.prompt.tokenCounts;
        const completionTokens = s.texts.length * n;
        yield {
          type: "final",
          usage: { promptTokens: c.total, promptTokensByModality: c, cachedPromptTokens: 0, completionTokens },
          timings: { queueMs: 1, visionEncodeMs: 2, prefillMs: 3, decodeMs: 4 },
        };
        return;
      }
      const max = p.maxTokens ?? 4;
      const seed = p.seed ?? 0;
      let sent = 0;
      for (let k = 0; k < max; k++) {
        for (let i = 0; i < n; i++) {
          if (s.tokenDelayMs) await new Promise((r) => setTimeout(r, s.tokenDelayMs));
          else await Promise.resolve();
          check();
          if (s.failAfter && sent === s.failAfter.tokens) throw s.failAfter.error;
          const id = seed + i + k;
          const text = `w${id} `;
          const bytes = new TextEncoder().encode(text);
          const logprobs = p.logprobs
            ? [
                {
                  chosen: { tokenId: id, token: text, logprob: -0.5, bytes },
                  top: Array.from({ length: p.topLogprobs }, (_, j) => ({
                    tokenId: id + j,
                    token: `w${id + j} `,
                    logprob: -0.5 - j,
                    bytes: new TextEncoder().encode(`w${id + j} `),
                  })),
                },
              ]
            : [];
          yield { type: "token", index: i, tokenIds: [id], text, logprobs };
          sent++;
          if (s.hangAfterFirst) {
            await new Promise<void>((resolve) => {
              if (signal?.aborted) resolve();
              signal?.addEventListener("abort", () => resolve(), { once: true });
            });
            check();
          }
        }
      }
      for (let i = 0; i < n; i++) yield { type: "choice_end", index: i, finishReason: "length", stopReason: "" };
      const c = input.prompt.tokenCounts;
      yield {
        type: "final",
        usage: { promptTokens: c.total, promptTokensByModality: c, cachedPromptTokens: 0, completionTokens: sent },
        timings: { queueMs: 1, visionEncodeMs: 2, prefillMs: 3, decodeMs: 4 },
      };
    } finally {
      this.open--;
    }
  }

  async info(): Promise<BackendInfo> {
    if (!this.up) throw new EdgeError("unavailable", `${this.address}: connection refused`);
    return { ...this.info_ };
  }

  async healthy(): Promise<boolean> {
    return this.up;
  }
}
