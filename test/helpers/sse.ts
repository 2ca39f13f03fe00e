/**
 * A raw SSE client for /v1/chat/completions, for tests that must see every event (an error event, then
 * `[DONE]`), which the openai client hides. Every call is bounded by a timeout, so a hung stream fails the test.
 */

/** What one chat request returned. */
export interface ChatResult {
  status: number;
  /** Parsed JSON of every `data:` event except `[DONE]` (or the JSON body of a non-streaming answer). */
  events: Record<string, unknown>[];
  /** Concatenated delta (or message) content of choice 0. */
  text: string;
  /** `error.message` of an error event or error body, if any. */
  error: string | undefined;
  /** Whether the stream ended with `data: [DONE]`. */
  done: boolean;
  finishReason: string | undefined;
  usage: { prompt_tokens: number; completion_tokens: number } | undefined;
}

type Json = Record<string, unknown>;

/** A started chat request: `firstToken` resolves when content arrives, `result` when the response ends. */
export interface ChatCall {
  firstToken: Promise<void>;
  result: Promise<ChatResult>;
}

/** POSTs `body` to `${baseUrl}/v1/chat/completions`; streams when `body.stream` is true. */
export function chat(baseUrl: string, body: Json, timeoutMs = 120_000): ChatCall {
  let onToken: () => void = () => {};
  const firstToken = new Promise<void>((resolve) => {
    onToken = resolve;
  });
  const result = (async (): Promise<ChatResult> => {
    const res = await fetch(`${baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const out: ChatResult = {
      status: res.status,
      events: [],
      text: "",
      error: undefined,
      done: false,
      finishReason: undefined,
      usage: undefined,
    };
    const isSse = (res.headers.get("content-type") ?? "").startsWith("text/event-stream");
    if (!isSse) {
      const j = (await res.json()) as Json;
      out.events.push(j);
      collect(out, j, "message");
      if (out.text) onToken();
      return out;
    }
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      for (let i = buf.indexOf("\n\n"); i >= 0; i = buf.indexOf("\n\n")) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart())
          .join("\n");
        if (data === "") continue;
        if (out.done) throw new Error(`event after [DONE]: ${data}`);
        if (data === "[DONE]") {
          out.done = true;
          continue;
        }
        const j = JSON.parse(data) as Json;
        out.events.push(j);
        collect(out, j, "delta");
        if (out.text) onToken();
      }
    }
    return out;
  })();
  // A failed request must not leave firstToken pending forever for a caller that awaits it.
  result.then(
    () => onToken(),
    () => onToken(),
  );
  return { firstToken, result };
}

function collect(out: ChatResult, j: Json, key: "delta" | "message"): void {
  const err = j.error as { message?: string } | undefined;
  if (err) out.error = err.message ?? JSON.stringify(err);
  const choice = (j.choices as Json[] | undefined)?.[0];
  const part = choice?.[key] as { content?: string | null } | undefined;
  if (part?.content) out.text += part.content;
  if (typeof choice?.finish_reason === "string") out.finishReason = choice.finish_reason;
  if (j.usage) out.usage = j.usage as ChatResult["usage"];
}
