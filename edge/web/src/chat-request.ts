/**
 * The page's conversation model and how it becomes an OpenAI-compatible request body
 * (`POST /v1/chat/completions`, vLLM extras, MiniCPM-V `mm_processor_kwargs`).
 */

/** An attached image or video, already read into a `data:` URL. */
export interface Attachment {
  kind: "image" | "video";
  name: string;
  /** `data:image/png;base64,...` or `data:video/mp4;base64,...`. */
  dataUrl: string;
}

/** One turn of the conversation as it is sent back to the model. */
export interface Turn {
  role: "user" | "assistant";
  text: string;
  attachments: Attachment[];
}

export type Decoding = "sampling" | "beam";

/** What the settings panel holds. `null` means "leave it to the server". */
export interface Settings {
  decoding: Decoding;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  maxTokens: number | null;
  maxSliceNums: number | null;
  videoFps: number | null;
  videoMaxFrames: number | null;
  systemPrompt: string;
  /** Structured output: a JSON Schema (as text) the answer must follow; "" for free text. */
  jsonSchema: string;
}

/** The reference `chat()` sampling preset (MINICPMV26.md §6.5). */
export const SAMPLING_PRESET = { temperature: 0.7, topP: 0.8, topK: 100, repetitionPenalty: 1.05 } as const;

/** The reference `chat()` beam-search preset: 3 beams, repetition penalty 1.2 (MINICPMV26.md §6.5). */
export const BEAM_PRESET = { beams: 3, repetitionPenalty: 1.2 } as const;

/** Settings the page starts with: the sampling preset, everything else left to the server but max tokens. */
export const DEFAULT_SETTINGS: Settings = {
  decoding: "sampling",
  ...SAMPLING_PRESET,
  maxTokens: 1024,
  maxSliceNums: null,
  videoFps: null,
  videoMaxFrames: null,
  systemPrompt: "",
  jsonSchema: "",
};

type ContentPart =
  | { type: "text"; text: string }
  | { type: "image_url"; image_url: { url: string } }
  | { type: "video_url"; video_url: { url: string } };

type Message = { role: "system" | "assistant"; content: string } | { role: "user"; content: string | ContentPart[] };

/** The JSON body of a streamed chat completion request. */
export interface ChatRequestBody {
  model?: string;
  messages: Message[];
  stream: true;
  stream_options: { include_usage: true };
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  repetition_penalty: number;
  use_beam_search?: true;
  n?: number;
  best_of?: number;
  mm_processor_kwargs?: { max_slice_nums?: number; fps?: number; max_frames?: number };
  response_format?: { type: "json_schema"; json_schema: { name: string; schema: unknown; strict: true } };
}

/**
 * Builds the request for the next answer to `turns` (the last turn is the user's).
 * Media go before the text in a user turn, as in the reference (`content = frames + [question]`).
 */
export function buildChatRequest(turns: readonly Turn[], settings: Settings, model: string | null): ChatRequestBody {
  const messages: Message[] = [];
  const system = settings.systemPrompt.trim();
  if (system !== "") messages.push({ role: "system", content: system });
  for (const turn of turns) {
    if (turn.role === "assistant") {
      messages.push({ role: "assistant", content: turn.text });
    } else if (turn.attachments.length === 0) {
      messages.push({ role: "user", content: turn.text });
    } else {
      const parts: ContentPart[] = turn.attachments.map((a) =>
        a.kind === "image"
          ? { type: "image_url", image_url: { url: a.dataUrl } }
          : { type: "video_url", video_url: { url: a.dataUrl } },
      );
      if (turn.text !== "") parts.push({ type: "text", text: turn.text });
      messages.push({ role: "user", content: parts });
    }
  }

  const body: ChatRequestBody = {
    messages,
    stream: true,
    stream_options: { include_usage: true },
    repetition_penalty: settings.repetitionPenalty,
  };
  if (model !== null) body.model = model;
  if (settings.maxTokens !== null) body.max_tokens = settings.maxTokens;
  if (settings.decoding === "sampling") {
    body.temperature = settings.temperature;
    body.top_p = settings.topP;
    body.top_k = settings.topK;
  } else {
    // NOTE: the reference returns the best of 3 beams; n stays 1 so one answer streams back.
    body.use_beam_search = true;
    body.n = 1;
    body.best_of = BEAM_PRESET.beams;
  }
  const mm: NonNullable<ChatRequestBody["mm_processor_kwargs"]> = {};
  if (settings.maxSliceNums !== null) mm.max_slice_nums = settings.maxSliceNums;
  if (settings.videoFps !== null) mm.fps = settings.videoFps;
  if (settings.videoMaxFrames !== null) mm.max_frames = settings.videoMaxFrames;
  if (Object.keys(mm).length > 0) body.mm_processor_kwargs = mm;
  // Structured output: the server constrains decoding so the answer is JSON valid against the schema.
  if (settings.jsonSchema.trim() !== "") {
    body.response_format = {
      type: "json_schema",
      json_schema: { name: "answer", schema: JSON.parse(settings.jsonSchema), strict: true },
    };
  }
  return body;
}
