/**
 * The library entry: a chat request with media -> token ids, slices and token counts.
 *
 *   request ─validate─► media parts ─fetch (URL)─► bytes ─┬─ image ──────────────► pool: decode+slice+hash
 *                                                        └─ video ─ffmpeg frames─► pool: slice+hash (per frame)
 *           ─► prompt (template, placeholders, ids, slice offsets, counts) ─► context limit ─► PreparedPrompt
 *
 * Media run concurrently; the first failure aborts the rest (ffmpeg killed, queued pool tasks dropped).
 * Legacy completions skip all of it: `raw_prompt` is encoded as is, `prompt_token_ids` are checked and kept.
 */

import { context, SpanStatusCode, type Tracer } from "@opentelemetry/api";
import { abortError, invalid, overLimit, throwIfAborted } from "./errors";
import type { MediaFetcher } from "./fetch-media";
import type { ImageLimits } from "./image/decode";
import type { SlicedMedia } from "./media";
import type { ModelDefaults } from "./model-defaults";
import type { MediaRunner } from "./pool";
import type { PromptPart, PromptTurn } from "./prompt";
import { RequestTrace, SPAN } from "./request-trace";
import { InlineTextRunner, type TextRunner } from "./text-runner";
import type { Tokenizer } from "./tokenizer";
import type {
  ChatTurn,
  MediaSource,
  Modality,
  PreparedMedia,
  PreparedPrompt,
  PrepareOptions,
  PrepareRequest,
  VideoSource,
} from "./types";
import { decodeVideo } from "./video/decode-video";
import { uniformSubset } from "./video/sample";
import type { VideoSlots } from "./video/video-slots";

/** Service-wide limits (config.ts documents each with its env var). */
export interface PrepareLimits {
  readonly image: ImageLimits;
  /** Still images per request. */
  readonly maxImagesPerRequest: number;
  /** Videos per request. */
  readonly maxVideosPerRequest: number;
  /** Largest `max_slice_nums` a request may ask for. */
  readonly maxSliceNumsLimit: number;
  readonly maxVideoBytes: number;
  readonly maxVideoDurationSec: number;
  /** Largest `video_max_frames` a request may ask for. */
  readonly maxVideoFrames: number;
  /** Largest `video_fps` a request may ask for. */
  readonly maxVideoFps: number;
  /** Largest video frame (width*height), separate from still images; unset: the image limit. */
  readonly maxVideoFramePixels?: number;
  /** Kills ffmpeg after this long (per pass). */
  readonly videoTimeoutMs: number;
  /** Prompt token limit (never above the model's context length). */
  readonly maxPromptTokens: number;
  /**
   * Most characters of text one request may carry, checked before any tokenizing; 0 or unset: derived,
   * {@link CHARS_PER_TOKEN_LIMIT} times the request's prompt-token limit.
   */
  readonly maxPromptChars?: number;
}

/**
 * Characters per token that a prompt may average before it is refused unread: far above real text (English
 * averages ~4, code with indentation ~5), so only text that could never fit the context is refused.
 */
export const CHARS_PER_TOKEN_LIMIT = 10;

/** Video defaults of the reference example (§7). */
export const VIDEO_DEFAULTS = { fps: 1, maxFrames: 64, maxSliceNums: 2, useImageId: false } as const;

/** What `prepare` needs. */
export interface PrepareDeps {
  readonly tokenizer: Tokenizer;
  readonly media: MediaRunner;
  readonly limits: PrepareLimits;
  readonly defaults: ModelDefaults;
  /** The ffmpeg binary (throws "ffmpeg not found" when there is none). */
  readonly ffmpegPath: () => string;
  /** Fetches ImageInput.url / VideoInput.url; without it URLs are refused. */
  readonly fetchMedia?: MediaFetcher | undefined;
  /** Set when tracing is on: spans per stage, children of the active span (the Prepare call's). */
  readonly tracer?: Tracer | undefined;
  /** Bounds the videos decoded at once (ffmpeg runs); default: no bound (tests, tools). */
  readonly videoSlots?: VideoSlots | undefined;
  /** Where tokenizing runs (a worker thread in the service); default: inline with `tokenizer`. */
  readonly text?: TextRunner | undefined;
}

interface Resolved {
  maxSliceNums: number;
  useImageId: boolean;
  videoFps: number;
  videoMaxFrames: number;
  videoMaxSliceNums: number;
  maxPromptTokens: number;
  maxPromptChars: number;
}

function resolveOptions(o: PrepareOptions | undefined, deps: PrepareDeps): Resolved {
  const { limits, defaults } = deps;
  const int = (v: number | undefined, d: number, lo: number, hi: number, name: string) => {
    if (v === undefined) return d;
    if (!Number.isInteger(v) || v < lo || v > hi)
      throw invalid(`options.${name} must be an integer in [${lo}, ${hi}], got ${v}`);
    return v;
  };
  const serviceLimit =
    limits.maxPromptTokens > 0 ? Math.min(limits.maxPromptTokens, defaults.contextLength) : defaults.contextLength;
  const maxPromptTokens = o?.maxPromptTokens ? Math.min(o.maxPromptTokens, serviceLimit) : serviceLimit;
  const fps = o?.videoFps ?? VIDEO_DEFAULTS.fps;
  if (!(fps > 0) || fps > limits.maxVideoFps) {
    throw invalid(`options.video_fps must be in (0, ${limits.maxVideoFps}], got ${fps}`);
  }
  return {
    maxSliceNums: int(o?.maxSliceNums, defaults.maxSliceNums, 1, limits.maxSliceNumsLimit, "max_slice_nums"),
    useImageId: o?.useImageId ?? defaults.useImageId,
    videoFps: fps,
    videoMaxFrames: int(
      o?.videoMaxFrames,
      Math.min(VIDEO_DEFAULTS.maxFrames, limits.maxVideoFrames),
      1,
      limits.maxVideoFrames,
      "video_max_frames",
    ),
    videoMaxSliceNums: int(
      o?.videoMaxSliceNums,
      Math.min(VIDEO_DEFAULTS.maxSliceNums, limits.maxSliceNumsLimit),
      1,
      limits.maxSliceNumsLimit,
      "video_max_slice_nums",
    ),
    maxPromptTokens,
    maxPromptChars: limits.maxPromptChars || maxPromptTokens * CHARS_PER_TOKEN_LIMIT,
  };
}

function validateMessages(messages: readonly ChatTurn[], limits: PrepareLimits): void {
  if (messages.length === 0) throw invalid("messages must not be empty");
  let images = 0;
  let videos = 0;
  messages.forEach((m, i) => {
    if (m.role !== "system" && m.role !== "user" && m.role !== "assistant") {
      throw invalid(`messages[${i}].role must be system, user or assistant`);
    }
    m.parts.forEach((p, j) => {
      if (p.type === "image") images++;
      else if (p.type === "video") videos++;
      else if (typeof p.text !== "string") throw invalid(`messages[${i}].parts[${j}].text must be a string`);
      if (m.role === "system" && p.type !== "text") throw invalid(`messages[${i}]: a system message holds text only`);
    });
  });
  const firstAt = messages[0]?.role === "system" ? 1 : 0;
  const first = messages[firstAt];
  if (!first) throw invalid("messages must hold at least one user message");
  if (first.role !== "user") {
    throw invalid(`messages[${firstAt}].role: the first non-system message must be from the user, got ${first.role}`);
  }
  if (images > limits.maxImagesPerRequest) {
    throw overLimit(`messages: the request has ${images} images, over the limit of ${limits.maxImagesPerRequest}`);
  }
  if (videos > limits.maxVideosPerRequest) {
    throw overLimit(`messages: the request has ${videos} videos, over the limit of ${limits.maxVideosPerRequest}`);
  }
}

type Item = { modality: Modality; sliced: SlicedMedia; useImageId: boolean };

type PromptForm = "messages" | "raw_prompt" | "prompt_token_ids";

/** The one prompt form a request uses; none or several is INVALID_ARGUMENT naming the fields. */
function promptForm(req: PrepareRequest): PromptForm {
  const set: PromptForm[] = [];
  if (req.messages.length > 0) set.push("messages");
  if (req.rawPrompt !== undefined) set.push("raw_prompt");
  if ((req.promptTokenIds?.length ?? 0) > 0) set.push("prompt_token_ids");
  if (set.length === 1) return set[0] as PromptForm;
  if (set.length === 0) {
    throw invalid("messages must not be empty (set exactly one of messages, raw_prompt or prompt_token_ids)");
  }
  throw invalid(`set exactly one of messages, raw_prompt or prompt_token_ids; the request sets ${set.join(" and ")}`);
}

/**
 * A legacy-completions prompt: `raw_prompt` encoded like HF `tokenizer(text)` (special-token strings are
 * special tokens, no template, no BOS) or `prompt_token_ids` checked against the vocabulary. No media, so
 * every token is a text token; `promptText` is the ids decoded.
 */
async function rawPrompt(
  req: PrepareRequest,
  form: "raw_prompt" | "prompt_token_ids",
  opts: Resolved,
  deps: PrepareDeps,
  rt: RequestTrace | undefined,
): Promise<PreparedPrompt> {
  const { tokenizer } = deps;
  const text = textRunner(deps);
  let tokenIds: number[];
  if (form === "raw_prompt") {
    await checkTextLength([{ text: req.rawPrompt ?? "", field: "raw_prompt" }], opts, text, true);
    const span = rt?.start(SPAN.tokenize);
    tokenIds = await text.encode(req.rawPrompt ?? "");
    span?.setAttributes({ "prompt.tokens": tokenIds.length, "prompt.image_tokens": 0 });
    span?.end();
    if (tokenIds.length === 0) throw invalid("raw_prompt must not be empty");
  } else {
    const ids = req.promptTokenIds ?? [];
    const v = tokenizer.vocabSize;
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= v) {
        throw invalid(`prompt_token_ids[${i}]: ${id} is outside the vocabulary (0..${v - 1})`);
      }
    });
    tokenIds = [...ids];
  }
  const total = tokenIds.length;
  checkPromptLength(total, opts);
  return {
    tokenIds,
    media: [],
    tokenCounts: { text: total, image: 0, video: 0, total },
    promptText: await text.decode(tokenIds),
  };
}

const inlineRunners = new WeakMap<Tokenizer, TextRunner>();

function textRunner(deps: PrepareDeps): TextRunner {
  if (deps.text) return deps.text;
  let r = inlineRunners.get(deps.tokenizer);
  if (!r) {
    r = new InlineTextRunner(deps.tokenizer);
    inlineRunners.set(deps.tokenizer, r);
  }
  return r;
}

/**
 * Refuses text that cannot fit before tokenizing it: first on its length in characters, then, when it is
 * longer than the token limit in characters, by a count that stops once past the limit. So a huge prompt
 * costs what the limit costs, never its own length.
 */
async function checkTextLength(
  parts: readonly { text: string; field: string }[],
  opts: Resolved,
  text: TextRunner,
  special = false,
): Promise<void> {
  let chars = 0;
  for (const p of parts) {
    chars += p.text.length;
    if (chars > opts.maxPromptChars) {
      const total = parts.reduce((n, q) => n + q.text.length, 0);
      throw invalid(
        `${p.field}: the request has ${total} characters of text, over the limit of ${opts.maxPromptChars} (${CHARS_PER_TOKEN_LIMIT} per token of the ${opts.maxPromptTokens}-token prompt limit)`,
      );
    }
  }
  // A token holds at least one character; a short text costs little to tokenize in full (exact count after).
  if (chars <= opts.maxPromptTokens || chars <= 4096) return;
  const n = await text.countUpTo(
    parts.map((p) => p.text),
    opts.maxPromptTokens,
    special,
  );
  if (n > opts.maxPromptTokens) {
    const field = special ? "raw_prompt" : "messages";
    throw invalid(
      `${field}: prompt has more than ${opts.maxPromptTokens} tokens, over the limit of ${opts.maxPromptTokens}`,
    );
  }
}

function checkPromptLength(total: number, opts: Resolved): void {
  if (total > opts.maxPromptTokens) {
    throw invalid(
      `prompt has ${total} tokens, over the limit of ${opts.maxPromptTokens} by ${total - opts.maxPromptTokens}`,
    );
  }
}

/** Runs one preprocessing request. `signal` cancels it (ffmpeg and queued work included). */
export async function prepare(req: PrepareRequest, deps: PrepareDeps, signal?: AbortSignal): Promise<PreparedPrompt> {
  throwIfAborted(signal);
  const form = promptForm(req);
  if (form === "messages") validateMessages(req.messages, deps.limits);
  const opts = resolveOptions(req.options, deps);
  const rt = deps.tracer ? new RequestTrace(deps.tracer, context.active(), req.requestId ?? "") : undefined;
  if (form !== "messages") return await rawPrompt(req, form, opts, deps, rt);
  const text = textRunner(deps);
  await checkTextLength(
    req.messages.flatMap((m, i) =>
      m.parts.flatMap((p, j) =>
        p.type === "text" ? [{ text: p.text, field: `messages[${i}].parts[${j}].text` }] : [],
      ),
    ),
    opts,
    text,
  );

  // One controller for the whole request: the caller's cancel, or our own first failure, stops everything.
  const ac = new AbortController();
  const onAbort = () => ac.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  const jobs: Promise<Item[]>[] = [];
  const shape: ({ text: string } | { job: number })[][] = req.messages.map((m, i) =>
    m.parts.map((p, j) => {
      if (p.type === "text") return { text: p.text };
      const field = `messages[${i}].parts[${j}].${p.type}`;
      const job =
        p.type === "image"
          ? imageJob(p.source, field, opts, deps, ac.signal, rt)
          : videoJob(p.source, field, opts, deps, ac.signal, rt);
      job.catch((err: unknown) => ac.abort(err));
      jobs.push(job);
      return { job: jobs.length - 1 };
    }),
  );
  let items: Item[][];
  try {
    items = await Promise.all(jobs);
  } catch (err) {
    throw signal?.aborted ? abortError(signal) : err;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  throwIfAborted(signal);

  const turns: PromptTurn[] = req.messages.map((m, i) => ({
    role: m.role,
    parts: (shape[i] ?? []).flatMap((s): PromptPart[] =>
      "text" in s
        ? [{ text: s.text }]
        : (items[s.job] ?? []).map((it) => ({
            media: {
              modality: it.modality,
              grid: it.sliced.gridPlaceholder,
              sliceCount: it.sliced.slices.length,
              useImageId: it.useImageId,
            },
          })),
    ),
  }));
  const tokenizeSpan = rt?.start(SPAN.tokenize);
  const built = await text.build(turns, req.addGenerationPrompt);
  if (tokenizeSpan) {
    tokenizeSpan.setAttributes({
      "prompt.tokens": built.tokenCounts.total,
      "prompt.image_tokens": built.tokenCounts.image,
    });
    tokenizeSpan.end();
  }
  checkPromptLength(built.tokenCounts.total, opts);
  const flat = items.flat();
  const media: PreparedMedia[] = flat.map((it, k) => ({
    modality: it.modality,
    contentHash: it.sliced.contentHash,
    sourceWidth: it.sliced.sourceWidth,
    sourceHeight: it.sliced.sourceHeight,
    grid: it.sliced.gridSlicing,
    slices: it.sliced.slices.map((s, n) => ({
      width: s.width,
      height: s.height,
      rgb: s.data,
      tokenOffset: (built.sliceOffsets[k] as number[])[n] as number,
    })),
  }));
  return { tokenIds: built.tokenIds, media, tokenCounts: built.tokenCounts, promptText: built.text };
}

async function sourceBytes(
  source: MediaSource,
  field: string,
  maxBytes: number,
  deps: PrepareDeps,
  signal: AbortSignal,
  rt: RequestTrace | undefined,
): Promise<Uint8Array> {
  if ("data" in source) return source.data;
  const fetchMedia = deps.fetchMedia;
  if (!fetchMedia) throw invalid(`${field}.url: this service does not fetch URLs`);
  const fetch = () => fetchMedia(source.url, `${field}.url`, maxBytes, signal);
  if (!rt) return await fetch();
  return await rt.wrap(SPAN.fetch, { "media.field": field, "url.scheme": urlScheme(source.url) }, fetch, (span, b) =>
    span.setAttribute("media.bytes", b.length),
  );
}

function urlScheme(url: string): string {
  const i = url.indexOf(":");
  return i > 0 ? url.slice(0, i) : "";
}

async function imageJob(
  source: MediaSource,
  field: string,
  opts: Resolved,
  deps: PrepareDeps,
  signal: AbortSignal,
  rt: RequestTrace | undefined,
): Promise<Item[]> {
  const bytes = await sourceBytes(source, field, deps.limits.image.maxBytes, deps, signal, rt);
  const sliced = await deps.media.run(
    { kind: "encoded", bytes, maxSliceNums: opts.maxSliceNums, limits: deps.limits.image, field },
    signal,
  );
  rt?.media(sliced, field, bytes.length);
  return [{ modality: "image", sliced, useImageId: opts.useImageId }];
}

async function videoJob(
  source: VideoSource,
  field: string,
  opts: Resolved,
  deps: PrepareDeps,
  signal: AbortSignal,
  rt: RequestTrace | undefined,
): Promise<Item[]> {
  const { limits } = deps;
  const frameItem = (sliced: SlicedMedia): Item => ({
    modality: "video",
    sliced,
    useImageId: VIDEO_DEFAULTS.useImageId,
  });
  if ("frames" in source) {
    if (source.frames.length === 0) throw invalid(`${field}.frames must not be empty`);
    const bytes = source.frames.reduce((n, f) => n + f.length, 0);
    if (bytes > limits.maxVideoBytes) {
      throw overLimit(`${field}.frames: ${bytes} bytes is over the limit of ${limits.maxVideoBytes}`);
    }
    const keep = uniformSubset(source.frames.length, opts.videoMaxFrames);
    const out = await Promise.all(
      keep.map(async (k) => {
        const bytes = source.frames[k] as Uint8Array;
        const frameField = `${field}.frames[${k}]`;
        const m = await deps.media.run(
          { kind: "encoded", bytes, maxSliceNums: opts.videoMaxSliceNums, limits: limits.image, field: frameField },
          signal,
        );
        rt?.media(m, frameField, bytes.length);
        return m;
      }),
    );
    return out.map(frameItem);
  }
  const bytes = await sourceBytes(source, field, limits.maxVideoBytes, deps, signal, rt);
  const ffmpegPath = deps.ffmpegPath();
  const release = deps.videoSlots ? await deps.videoSlots.acquire(signal) : undefined;
  try {
    return await decodeFrames(bytes, ffmpegPath, field, opts, deps, signal, rt, frameItem);
  } finally {
    release?.();
  }
}

async function decodeFrames(
  bytes: Uint8Array,
  ffmpegPath: string,
  field: string,
  opts: Resolved,
  deps: PrepareDeps,
  signal: AbortSignal,
  rt: RequestTrace | undefined,
  frameItem: (sliced: SlicedMedia) => Item,
): Promise<Item[]> {
  const { limits } = deps;
  const tasks: Promise<SlicedMedia>[] = [];
  // One span over the ffmpeg pass; the frames' slice spans come from the workers' timings.
  const sampleSpan = rt?.start(SPAN.video, { "media.field": field, "media.bytes": bytes.length });
  try {
    for await (const frame of decodeVideo(bytes, {
      ffmpegPath,
      fps: opts.videoFps,
      maxFrames: opts.videoMaxFrames,
      maxBytes: limits.maxVideoBytes,
      maxDurationSec: limits.maxVideoDurationSec,
      maxFramePixels: limits.maxVideoFramePixels ?? limits.image.maxPixels,
      timeoutMs: limits.videoTimeoutMs,
      signal,
      field,
    })) {
      const frameField = `${field} frame ${frame.index}`;
      const t = deps.media.run(
        { kind: "rgb", image: frame, maxSliceNums: opts.videoMaxSliceNums, field: frameField },
        signal,
      );
      // Errors are observed by Promise.all below; this avoids an unhandled rejection meanwhile.
      t.then((m) => rt?.media(m, frameField, undefined)).catch(() => {});
      tasks.push(t);
    }
  } catch (err) {
    sampleSpan?.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
    throw err;
  } finally {
    if (sampleSpan) {
      sampleSpan.setAttribute("video.frames", tasks.length);
      sampleSpan.end();
    }
  }
  return (await Promise.all(tasks)).map(frameItem);
}
