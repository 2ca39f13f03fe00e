import { describe, expect, it } from "vitest";
import { ApiError, errorMessage, type StreamResult, streamChat } from "./chat-client";
import { buildChatRequest, DEFAULT_SETTINGS } from "./chat-request";
import { answerStats } from "./stats";

const body = buildChatRequest([{ role: "user", text: "hi", attachments: [] }], DEFAULT_SETTINGS, null);

function sseResponse(pieces: string[]): Response {
  const encoder = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const piece of pieces) controller.enqueue(encoder.encode(piece));
      controller.close();
    },
  });
  return new Response(stream, { status: 200, headers: { "content-type": "text/event-stream" } });
}

const chunk = (content: string, finish: string | null = null): string =>
  `data: ${JSON.stringify({ object: "chat.completion.chunk", choices: [{ index: 0, delta: { content }, finish_reason: finish }], usage: null })}\n\n`;

describe("streamChat", () => {
  it("streams deltas of choice 0, reads usage and timing, sends the key and body", async () => {
    let clock = 0;
    const seen: { url: string; init: RequestInit }[] = [];
    const deltas: string[] = [];
    const usage = {
      prompt_tokens: 80,
      completion_tokens: 3,
      total_tokens: 83,
      prompt_tokens_details: { text_tokens: 16, image_tokens: 64, video_tokens: 0, cached_tokens: 0 },
    };
    const result = await streamChat({
      body,
      apiKey: "sk-1",
      signal: new AbortController().signal,
      onDelta: (t) => {
        deltas.push(t);
        clock += 100;
      },
      now: () => clock,
      fetch: async (url, init) => {
        seen.push({ url: String(url), init: init ?? {} });
        clock = 250;
        return sseResponse([
          `data: ${JSON.stringify({ choices: [{ index: 0, delta: { role: "assistant", content: "" } }] })}\n\n`,
          chunk("Hel"),
          chunk("lo").slice(0, 20),
          chunk("lo").slice(20),
          `data: ${JSON.stringify({ choices: [{ index: 1, delta: { content: "other" } }] })}\n\n`,
          chunk("!", "stop"),
          `data: ${JSON.stringify({ choices: [], usage })}\n\n`,
          "data: [DONE]\n\n",
        ]);
      },
    });
    expect(deltas).toEqual(["Hel", "lo", "!"]);
    expect(seen[0]?.url).toBe("/v1/chat/completions");
    expect(seen[0]?.init.headers).toEqual({
      "content-type": "application/json",
      accept: "text/event-stream",
      authorization: "Bearer sk-1",
    });
    expect(JSON.parse(String(seen[0]?.init.body))).toEqual(body);
    expect(result).toEqual({ finishReason: "stop", usage, chunks: 3, firstTokenMs: 250, totalMs: 550 });
    expect(answerStats(result)).toEqual([
      { key: "prompt_tokens", text: "Prompt 80 tokens" },
      { key: "text_tokens", text: "text 16" },
      { key: "image_tokens", text: "image 64" },
      { key: "video_tokens", text: "video 0" },
      { key: "cached_tokens", text: "cached 0" },
      { key: "completion_tokens", text: "Answer 3 tokens" },
      { key: "ttft", text: "First token 250 ms" },
      { key: "tokens_per_second", text: "6.7 tokens/s" },
    ]);
  });

  it("rejects with the OpenAI error message and status of a failed request", async () => {
    const promise = streamChat({
      body,
      apiKey: null,
      signal: new AbortController().signal,
      onDelta: () => {},
      fetch: async () =>
        new Response(JSON.stringify({ error: { message: "video_url: 90 s is over the 60 s limit", code: 400 } }), {
          status: 400,
        }),
    });
    await expect(promise).rejects.toEqual(new ApiError(400, "video_url: 90 s is over the 60 s limit"));
  });

  it("rejects with a mid-stream SSE error event after the text that came before it", async () => {
    const deltas: string[] = [];
    const promise = streamChat({
      body,
      apiKey: null,
      signal: new AbortController().signal,
      onDelta: (t) => deltas.push(t),
      fetch: async () =>
        sseResponse([
          chunk("Par"),
          `data: ${JSON.stringify({ error: { message: "backend went away", type: "ServiceUnavailable", code: 503 } })}\n\n`,
          "data: [DONE]\n\n",
        ]),
    });
    await expect(promise).rejects.toEqual(new ApiError(503, "backend went away"));
    expect(deltas).toEqual(["Par"]);
  });
});

describe("errorMessage", () => {
  it("reads every error shape the anchors use", () => {
    expect(errorMessage(400, '{"error":{"message":"a"}}')).toBe("a");
    expect(errorMessage(400, '{"object":"error","message":"b"}')).toBe("b");
    expect(errorMessage(422, '{"error":"c","error_type":"validation"}')).toBe("c");
    expect(errorMessage(502, "Bad gateway")).toBe("HTTP 502: Bad gateway");
    expect(errorMessage(500, "")).toBe("HTTP 500");
  });
});

describe("answerStats", () => {
  it("without usage (stopped), counts chunks and skips speed for a single token", () => {
    const result: StreamResult = { finishReason: null, usage: null, chunks: 1, firstTokenMs: 1500, totalMs: 1600 };
    expect(answerStats(result)).toEqual([
      { key: "completion_tokens", text: "Answer ≈1 tokens" },
      { key: "ttft", text: "First token 1.50 s" },
    ]);
  });
});
