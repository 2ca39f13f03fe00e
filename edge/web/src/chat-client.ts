import type { ChatRequestBody } from "./chat-request";
import { SseParser } from "./sse";

/** `usage` of the final stream chunk (`stream_options.include_usage`), with MiniCPM-V's per-modality details. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: {
    text_tokens?: number;
    image_tokens?: number;
    video_tokens?: number;
    cached_tokens?: number;
  } | null;
}

/** An error reported by the API: HTTP status (0 for a network failure) and its message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** How a streamed answer ended. */
export interface StreamResult {
  finishReason: string | null;
  usage: Usage | null;
  /** Content chunks received (a proxy for tokens when usage is missing). */
  chunks: number;
  /** Milliseconds from sending to the first content, and to the end of the stream. */
  firstTokenMs: number | null;
  totalMs: number;
}

export interface StreamOptions {
  body: ChatRequestBody;
  apiKey: string | null;
  signal: AbortSignal;
  /** Called with each piece of answer text as it arrives. */
  onDelta: (text: string) => void;
  /** Defaults to `/v1/chat/completions` on the page's origin. */
  url?: string;
  fetch?: typeof fetch;
  now?: () => number;
}

/**
 * Reads the error message out of a failed response: OpenAI/vLLM `{error:{message}}`,
 * the legacy flat `{message}`, TGI/ollama `{error:"..."}`, or the raw text.
 */
export function errorMessage(status: number, text: string): string {
  try {
    const body = JSON.parse(text) as unknown;
    const message = messageOf(body);
    if (message !== null) return message;
  } catch {
    // not JSON: fall through to the text itself
  }
  const trimmed = text.trim();
  return trimmed === "" ? `HTTP ${status}` : `HTTP ${status}: ${trimmed.slice(0, 500)}`;
}

function messageOf(body: unknown): string | null {
  if (typeof body !== "object" || body === null) return null;
  const { error, message } = body as { error?: unknown; message?: unknown };
  if (typeof error === "string") return error;
  if (typeof error === "object" && error !== null) {
    const inner = (error as { message?: unknown }).message;
    if (typeof inner === "string") return inner;
  }
  if (typeof message === "string") return message;
  return null;
}

/**
 * Sends a streaming chat completion and feeds the answer of choice 0 to `onDelta`.
 * Resolves when the stream ends (`[DONE]` or the body closes); rejects with {@link ApiError}
 * for an HTTP error or an SSE error event, and with the abort reason when `signal` fires.
 */
export async function streamChat(options: StreamOptions): Promise<StreamResult> {
  const now = options.now ?? (() => performance.now());
  const doFetch = options.fetch ?? fetch;
  const started = now();
  const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream" };
  if (options.apiKey !== null && options.apiKey !== "") headers.authorization = `Bearer ${options.apiKey}`;

  let response: Response;
  try {
    response = await doFetch(options.url ?? "/v1/chat/completions", {
      method: "POST",
      headers,
      body: JSON.stringify(options.body),
      signal: options.signal,
    });
  } catch (err) {
    if (options.signal.aborted) throw err;
    throw new ApiError(0, `Could not reach the server: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, await response.text()));
  if (response.body === null) throw new ApiError(response.status, "The server sent an empty response");

  const result: StreamResult = { finishReason: null, usage: null, chunks: 0, firstTokenMs: null, totalMs: 0 };
  const parser = new SseParser();
  const decoder = new TextDecoder();
  const reader = response.body.getReader();
  let done = false;
  const handle = (data: string): void => {
    if (done) return;
    if (data.trim() === "[DONE]") {
      done = true;
      return;
    }
    let chunk: StreamChunk;
    try {
      chunk = JSON.parse(data) as StreamChunk;
    } catch {
      throw new ApiError(response.status, `The server sent a malformed stream event: ${data.slice(0, 200)}`);
    }
    if (chunk.error !== undefined) {
      throw new ApiError(statusOf(chunk.error) ?? 500, messageOf(chunk) ?? "The server reported an error");
    }
    for (const choice of chunk.choices ?? []) {
      if (choice.index !== 0) continue;
      const text = choice.delta?.content;
      if (typeof text === "string" && text !== "") {
        if (result.firstTokenMs === null) result.firstTokenMs = now() - started;
        result.chunks++;
        options.onDelta(text);
      }
      if (choice.finish_reason) result.finishReason = choice.finish_reason;
    }
    if (chunk.usage) result.usage = chunk.usage;
  };

  try {
    while (!done) {
      const { value, done: closed } = await reader.read();
      if (closed) {
        for (const data of parser.push(decoder.decode())) handle(data);
        for (const data of parser.end()) handle(data);
        break;
      }
      for (const data of parser.push(decoder.decode(value, { stream: true }))) handle(data);
    }
  } finally {
    // Releases the connection (and tells the server) if we stop reading early.
    await reader.cancel().catch(() => {});
  }
  result.totalMs = now() - started;
  return result;
}

interface StreamChunk {
  choices?: { index: number; delta?: { content?: string | null }; finish_reason?: string | null }[];
  usage?: Usage | null;
  error?: unknown;
}

function statusOf(error: unknown): number | null {
  if (typeof error !== "object" || error === null) return null;
  const code = (error as { code?: unknown }).code;
  return typeof code === "number" && code >= 400 && code < 600 ? code : null;
}
