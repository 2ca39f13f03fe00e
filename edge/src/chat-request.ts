/**
 * A validated OpenAI/vLLM chat request -> the domain inputs of Prepare and Generate. Checks that need more
 * than one field (media counts, data URLs, unsupported features, beam-search settings) live here; each
 * failure is a 400 naming the field.
 */
import type {
  ChatMessage,
  ContentPart,
  GenerationParams,
  ImageSource,
  PrepareOptions,
  VideoSource,
} from "./backends/types";
import { EdgeError } from "./errors";
import type { ChatRequest, ContentPartJson } from "./schemas";
import { checkStructuredInterplay, type StructuredPlan, structuredPlan } from "./structured-request";
import { type ToolPlan, toolCallsText, toolPlan, toolResponseText, toolsPrompt } from "./tools";

/** Limits that come from configuration. */
export interface RequestLimits {
  maxImagesPerRequest: number;
  maxVideosPerRequest: number;
}

/** Everything the chat route needs from one request. */
export interface ChatPlan {
  messages: ChatMessage[];
  options: PrepareOptions;
  params: GenerationParams;
  addGenerationPrompt: boolean;
  stream: boolean;
  includeUsage: boolean;
  continuousUsage: boolean;
  priority: number;
  /** max_completion_tokens ?? max_tokens, when given. */
  maxTokens: number | undefined;
  images: number;
  videos: number;
  /** Constrained decoding, and the field it came from (tool_choice for required/named tools). */
  structured: StructuredPlan | undefined;
  /** Tools in use (not "none"). */
  tools: ToolPlan | undefined;
}

/** The reference's non-sampling preset (MiniCPM-V chat(sampling=False)): 3 beams, repetition penalty 1.2. */
export const BEAM_PRESET = { beamWidth: 3, repetitionPenalty: 1.2 } as const;

const BASE64_RE = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** A 400 naming `param`. */
export function bad(param: string, message: string): EdgeError {
  return new EdgeError("invalid_request", `${param}: ${message}`, { param, reason: "validation" });
}

function decodeBase64(s: string, param: string): Uint8Array {
  const clean = s.replace(/\s+/g, "");
  if (clean.length === 0) throw bad(param, "the data URL has no data");
  if (!BASE64_RE.test(clean)) throw bad(param, "the data URL is not valid base64");
  return plain(Buffer.from(clean, "base64"));
}

// A Uint8Array view of a Buffer's bytes (domain types carry plain Uint8Arrays).
function plain(b: Buffer): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

interface DataUrl {
  mime: string;
  base64: boolean;
  payload: string;
}

function parseDataUrl(url: string, param: string): DataUrl {
  const comma = url.indexOf(",");
  if (comma < 0) throw bad(param, 'a data URL needs a "," before its data');
  const meta = url.slice(5, comma).split(";");
  return {
    mime: (meta[0] ?? "").toLowerCase(),
    base64: meta.slice(1).some((m) => m.toLowerCase() === "base64"),
    payload: url.slice(comma + 1),
  };
}

function dataBytes(d: DataUrl, param: string): Uint8Array {
  if (d.base64) return decodeBase64(d.payload, param);
  try {
    return plain(Buffer.from(decodeURIComponent(d.payload), "latin1"));
  } catch {
    throw bad(param, "the data URL is not valid percent-encoding");
  }
}

function checkHttpUrl(url: string, param: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw bad(param, "not a valid URL");
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw bad(param, `unsupported URL scheme "${u.protocol}" (use http(s) or a data URL)`);
  }
  return url;
}

function urlOf(v: string | { url: string }): string {
  return typeof v === "string" ? v : v.url;
}

function imageSource(url: string, param: string): ImageSource {
  if (url.startsWith("data:")) {
    const d = parseDataUrl(url, param);
    if (d.mime && !d.mime.startsWith("image/")) throw bad(param, `expected an image data URL, got "${d.mime}"`);
    return { kind: "data", data: dataBytes(d, param) };
  }
  return { kind: "url", url: checkHttpUrl(url, param) };
}

function videoSource(url: string, param: string): VideoSource {
  if (url.startsWith("data:")) {
    const d = parseDataUrl(url, param);
    // vLLM's pre-sampled form: data:video/jpeg;base64,<frame1>,<frame2>,... (also png/webp frames).
    if (/^video\/(jpeg|jpg|png|webp)$/.test(d.mime) && d.base64) {
      const frames = d.payload.split(",").map((f, i) => decodeBase64(f, `${param} (frame ${i})`));
      return { kind: "frames", frames };
    }
    if (d.mime && !d.mime.startsWith("video/")) throw bad(param, `expected a video data URL, got "${d.mime}"`);
    return { kind: "data", data: dataBytes(d, param) };
  }
  return { kind: "url", url: checkHttpUrl(url, param) };
}

function partOf(p: ContentPartJson, param: string): ContentPart {
  switch (p.type) {
    case "text":
      return { kind: "text", text: p.text };
    case "image_url":
      return { kind: "image", source: imageSource(urlOf(p.image_url), `${param}.image_url.url`) };
    case "video_url":
      return { kind: "video", source: videoSource(urlOf(p.video_url), `${param}.video_url.url`) };
  }
}

function unsupported(req: ChatRequest): void {
  if (req.continue_final_message) throw bad("continue_final_message", "continue_final_message is not supported");
  if (req.stream_options && !req.stream) throw bad("stream_options", "stream_options is only allowed with stream=true");
  if (req.top_logprobs && !req.logprobs) throw bad("top_logprobs", "top_logprobs needs logprobs=true");
}

/** OpenAI's logit_bias (token id strings -> bias) as numeric ids; the gpu-service checks them against the vocabulary. */
export function logitBias(bias: Readonly<Record<string, number>>): Record<number, number> {
  const out: Record<number, number> = {};
  for (const [key, value] of Object.entries(bias)) {
    if (!/^\d{1,9}$/.test(key))
      throw bad(`logit_bias.${key}`, `keys must be token ids (non-negative integers), got "${key}"`);
    out[Number(key)] = value;
  }
  return out;
}

/** The request fields that chat and legacy completions share (schemas.ts `samplingFields`). */
export type SamplingRequest = Pick<
  ChatRequest,
  | "n"
  | "min_tokens"
  | "stop"
  | "stop_token_ids"
  | "ignore_eos"
  | "temperature"
  | "top_p"
  | "top_k"
  | "min_p"
  | "repetition_penalty"
  | "presence_penalty"
  | "frequency_penalty"
  | "seed"
  | "logit_bias"
  | "skip_special_tokens"
>;

/**
 * Generation params from the shared fields, with `maxTokens` (already resolved) when set; no logprobs, no
 * beams. Unset sampling fields stay unset: the gpu-service applies the reference defaults.
 */
export function samplingParams(req: SamplingRequest, maxTokens: number | undefined): GenerationParams {
  const minTokens = req.min_tokens ?? 0;
  if (maxTokens !== undefined && minTokens > maxTokens) {
    throw bad("min_tokens", `must be <= max_tokens (${maxTokens}), got ${minTokens}`);
  }
  const params: GenerationParams = {
    minTokens,
    stop: req.stop == null ? [] : typeof req.stop === "string" ? [req.stop] : req.stop,
    stopTokenIds: req.stop_token_ids ?? [],
    ignoreEos: req.ignore_eos ?? false,
    n: req.n ?? 1,
    beamWidth: 0,
    logprobs: false,
    topLogprobs: 0,
  };
  if (req.temperature != null) params.temperature = req.temperature;
  if (req.top_p != null) params.topP = req.top_p;
  if (req.top_k != null) params.topK = req.top_k;
  if (req.min_p != null) params.minP = req.min_p;
  if (req.repetition_penalty != null) params.repetitionPenalty = req.repetition_penalty;
  if (req.presence_penalty != null) params.presencePenalty = req.presence_penalty;
  if (req.frequency_penalty != null) params.frequencyPenalty = req.frequency_penalty;
  if (req.seed != null) params.seed = req.seed;
  if (maxTokens !== undefined) params.maxTokens = maxTokens;
  if (req.logit_bias) params.logitBias = logitBias(req.logit_bias);
  if (req.skip_special_tokens != null) params.skipSpecialTokens = req.skip_special_tokens;
  return params;
}

/** Builds the Prepare and Generate inputs of a validated request; throws a 400 EdgeError naming the field. */
export function planChat(req: ChatRequest, limits: RequestLimits): ChatPlan {
  unsupported(req);
  const tools = toolPlan(req);
  let structured = structuredPlan(req);
  if (tools?.structured) {
    if (structured) throw bad("tool_choice", `tool_choice "${tools.mode}" cannot be combined with ${structured.param}`);
    structured = { spec: tools.structured, param: "tool_choice" };
  }
  if (structured) checkStructuredInterplay(structured, req);
  let images = 0;
  let videos = 0;
  const messages: ChatMessage[] = [];
  for (const [i, m] of req.messages.entries()) {
    const role = m.role === "developer" ? "system" : m.role;
    const content = m.content ?? "";
    const parts: ContentPart[] =
      typeof content === "string"
        ? content === "" && role !== "user"
          ? []
          : [{ kind: "text", text: content }]
        : content.map((p, j) => partOf(p, `messages[${i}].content[${j}]`));
    for (const p of parts) {
      if (p.kind === "image") images++;
      if (p.kind === "video") videos++;
    }
    if ((role === "system" || role === "tool") && parts.some((p) => p.kind !== "text")) {
      throw bad(`messages[${i}].content`, `a ${role} message may only contain text`);
    }
    if (role === "tool") {
      // Tool results go back as a user turn of <tool_response> blocks; consecutive ones share the turn.
      const text = toolResponseText(parts.map((p) => (p.kind === "text" ? p.text : "")).join(""));
      const prev = messages.at(-1);
      if (prev && prev.role === "user" && req.messages[i - 1]?.role === "tool")
        prev.parts.push({ kind: "text", text: `\n${text}` });
      else messages.push({ role: "user", parts: [{ kind: "text", text }] });
      continue;
    }
    if (m.tool_calls && m.tool_calls.length > 0) {
      if (role !== "assistant") throw bad(`messages[${i}].tool_calls`, "only assistant messages carry tool_calls");
      const calls = toolCallsText(m.tool_calls, `messages[${i}].tool_calls`);
      parts.push({ kind: "text", text: parts.length > 0 ? `\n${calls}` : calls });
    }
    if (parts.length === 0) parts.push({ kind: "text", text: "" });
    messages.push({ role, parts });
  }
  if (tools) {
    // The tools go at the end of the system prompt (the template's default system prompt when there is none).
    const first = messages[0];
    const section = toolsPrompt(tools.tools);
    if (first?.role === "system") first.parts.push({ kind: "text", text: `\n\n${section}` });
    else
      messages.unshift({
        role: "system",
        parts: [{ kind: "text", text: `You are a helpful assistant.\n\n${section}` }],
      });
  }
  if (images > limits.maxImagesPerRequest) {
    throw bad(
      "messages",
      `At most ${limits.maxImagesPerRequest} image(s) may be provided in one request (got ${images})`,
    );
  }
  if (videos > limits.maxVideosPerRequest) {
    throw bad(
      "messages",
      `At most ${limits.maxVideosPerRequest} video(s) may be provided in one request (got ${videos})`,
    );
  }

  const mm = req.mm_processor_kwargs;
  const io = req.media_io_kwargs?.video;
  const options: PrepareOptions = {};
  if (mm?.max_slice_nums != null) options.maxSliceNums = mm.max_slice_nums;
  if (mm?.use_image_id != null) options.useImageId = mm.use_image_id;
  const fps = mm?.fps ?? io?.fps;
  if (fps != null) options.videoFps = fps;
  const maxFrames = mm?.max_frames ?? io?.num_frames;
  if (maxFrames != null) options.videoMaxFrames = maxFrames;
  if (mm?.video_max_slice_nums != null) options.videoMaxSliceNums = mm.video_max_slice_nums;

  const n = req.n ?? 1;
  const maxTokens = req.max_completion_tokens ?? req.max_tokens ?? undefined;
  const params = samplingParams(req, maxTokens);
  params.logprobs = req.logprobs ?? false;
  params.topLogprobs = req.top_logprobs ?? 0;
  if (structured) params.structured = structured.spec;

  if (req.use_beam_search) {
    // Beam search is the reference's sampling=False mode: deterministic, 3 beams, repetition penalty 1.2;
    // best_of widens the beam, n picks how many of the best beams are returned.
    const width = req.best_of ?? Math.max(BEAM_PRESET.beamWidth, n);
    if (n > width) throw bad("n", `must be <= best_of (${width}) with use_beam_search, got ${n}`);
    params.beamWidth = width;
    params.temperature = 0;
    params.repetitionPenalty = req.repetition_penalty ?? BEAM_PRESET.repetitionPenalty;
    if (req.length_penalty != null) params.lengthPenalty = req.length_penalty;
  } else if (req.best_of != null && req.best_of !== n) {
    throw bad("best_of", "best_of is only supported with use_beam_search=true");
  } else if (req.length_penalty != null && req.length_penalty !== 1) {
    throw bad("length_penalty", "length_penalty applies to beam search only (use_beam_search=true)");
  }

  return {
    messages,
    options,
    params,
    addGenerationPrompt: req.add_generation_prompt ?? true,
    stream: req.stream ?? false,
    includeUsage: req.stream_options?.include_usage ?? false,
    continuousUsage: req.stream_options?.continuous_usage_stats ?? false,
    priority: req.priority ?? 0,
    maxTokens,
    images,
    videos,
    structured,
    tools,
  };
}
