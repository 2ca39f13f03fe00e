import { describe, expect, it } from "vitest";
import { backendError, type EdgeError } from "./errors";
import {
  errorOf,
  expectValidationError,
  gpu0,
  type Harness,
  postJson,
  readUntil,
  setup,
  sseEvents,
} from "./testing/app-harness";
import { FAKE_TOKENS_PER_IMAGE, FAKE_TOKENS_PER_MESSAGE, type FakeGpu } from "./testing/fakes";

function post(app: Harness["app"], body: unknown, headers: Record<string, string> = {}, init: RequestInit = {}) {
  return postJson(app, "/v1/chat/completions", body, headers, init);
}

const hello = { messages: [{ role: "user", content: "hello there" }] };

describe("POST /v1/chat/completions (non-streaming)", () => {
  it("returns a chat.completion with usage by modality and echoes x-request-id to the client and backends", async () => {
    const s = setup();
    const img = `data:image/png;base64,${Buffer.from([1, 2, 3]).toString("base64")}`;
    const res = await post(
      s.app,
      {
        model: "openbmb/MiniCPM-V-2_6",
        messages: [
          { role: "system", content: "be brief" },
          {
            role: "user",
            content: [
              { type: "text", text: "what is it" },
              { type: "image_url", image_url: { url: img } },
            ],
          },
        ],
        max_tokens: 3,
        seed: 7,
      },
      { "x-request-id": "req-abc" },
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe("req-abc");
    const body = (await res.json()) as Record<string, unknown>;
    const text = FAKE_TOKENS_PER_MESSAGE * 2 + 2 + 3; // template + "be brief" + "what is it"
    expect(body).toMatchObject({
      object: "chat.completion",
      model: "openbmb/MiniCPM-V-2_6",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "w7 w8 w9 " },
          logprobs: null,
          finish_reason: "length",
          stop_reason: null,
        },
      ],
      usage: {
        prompt_tokens: text + FAKE_TOKENS_PER_IMAGE,
        completion_tokens: 3,
        total_tokens: text + FAKE_TOKENS_PER_IMAGE + 3,
        prompt_tokens_details: {
          cached_tokens: 0,
          text_tokens: text,
          image_tokens: FAKE_TOKENS_PER_IMAGE,
          video_tokens: 0,
        },
      },
    });
    expect(String(body.id)).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
    expect(s.pre.metas[0]?.requestId).toBe("req-abc");
    expect(gpu0(s).metas[0]?.requestId).toBe("req-abc");
    expect(gpu0(s).calls[0]?.requestId).toBe("req-abc");
    const part = s.pre.calls[0]?.messages[1]?.parts[1];
    expect(part).toEqual({ kind: "image", source: { kind: "data", data: new Uint8Array(Buffer.from([1, 2, 3])) } });
    expect(gpu0(s).calls[0]?.params).toMatchObject({ maxTokens: 3, seed: 7, n: 1, beamWidth: 0 });
  });

  it("generates a request id when the client sends none", async () => {
    const s = setup();
    const res = await post(s.app, hello);
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(gpu0(s).metas[0]?.requestId).toBe(res.headers.get("x-request-id"));
  });

  it("maps media parts: http URLs pass through, vLLM pre-sampled frames, video data, short forms, options", async () => {
    const s = setup();
    const f1 = Buffer.from("frame-one").toString("base64");
    const f2 = Buffer.from("frame-two").toString("base64");
    const mp4 = Buffer.from("mp4bytes").toString("base64");
    const res = await post(s.app, {
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: "https://example.com/a.jpg", detail: "auto" } },
            { image_url: "http://example.com/b.png" },
            { type: "video_url", video_url: { url: `data:video/jpeg;base64,${f1},${f2}` } },
            { type: "video_url", video_url: `data:video/mp4;base64,${mp4}` },
            { type: "text", text: "compare" },
          ],
        },
        { role: "assistant", content: "ok" },
        { role: "user", content: "again" },
      ],
      mm_processor_kwargs: { max_slice_nums: 4, use_image_id: false, fps: 2 },
      media_io_kwargs: { video: { num_frames: 16 } },
      n: 1,
    });
    expect(res.status).toBe(200);
    const call = s.pre.calls[0];
    expect(call?.messages.map((m) => m.role)).toEqual(["user", "assistant", "user"]);
    expect(call?.messages[0]?.parts).toEqual([
      { kind: "image", source: { kind: "url", url: "https://example.com/a.jpg" } },
      { kind: "image", source: { kind: "url", url: "http://example.com/b.png" } },
      {
        kind: "video",
        source: {
          kind: "frames",
          frames: [new Uint8Array(Buffer.from("frame-one")), new Uint8Array(Buffer.from("frame-two"))],
        },
      },
      { kind: "video", source: { kind: "data", data: new Uint8Array(Buffer.from("mp4bytes")) } },
      { kind: "text", text: "compare" },
    ]);
    expect(call?.options).toEqual({
      maxSliceNums: 4,
      useImageId: false,
      videoFps: 2,
      videoMaxFrames: 16,
      maxPromptTokens: 4095,
    });
    expect(call?.addGenerationPrompt).toBe(true);
  });

  it("passes sampling parameters and vLLM extras to the gpu-service", async () => {
    const s = setup();
    const res = await post(s.app, {
      ...hello,
      temperature: 0.7,
      top_p: 0.8,
      top_k: 100,
      min_p: 0.05,
      repetition_penalty: 1.05,
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      stop: "\n\n",
      stop_token_ids: [151645],
      ignore_eos: true,
      min_tokens: 2,
      max_completion_tokens: 5,
      max_tokens: 9,
      priority: -1,
      logit_bias: { "100": 5, "7": -100 },
      skip_special_tokens: true,
      // vLLM flags at the values this server always has are accepted.
      include_stop_str_in_output: false,
      echo: false,
      guided_json: null,
      unknown_field: { anything: true },
    });
    expect(res.status).toBe(200);
    expect(gpu0(s).calls[0]).toMatchObject({
      priority: -1,
      params: {
        temperature: 0.7,
        topP: 0.8,
        topK: 100,
        minP: 0.05,
        repetitionPenalty: 1.05,
        presencePenalty: 0.5,
        frequencyPenalty: -0.5,
        stop: ["\n\n"],
        stopTokenIds: [151645],
        ignoreEos: true,
        minTokens: 2,
        maxTokens: 5,
        logitBias: { 100: 5, 7: -100 },
        skipSpecialTokens: true,
      },
    });
  });

  it("maps use_beam_search to the reference's non-sampling preset (3 beams, repetition penalty 1.2)", async () => {
    const s = setup();
    expect((await post(s.app, { ...hello, use_beam_search: true })).status).toBe(200);
    expect(gpu0(s).calls[0]?.params).toMatchObject({ beamWidth: 3, repetitionPenalty: 1.2, temperature: 0, n: 1 });
    expect(
      (
        await post(s.app, {
          ...hello,
          use_beam_search: true,
          best_of: 5,
          n: 2,
          repetition_penalty: 1.1,
          length_penalty: 0.5,
        })
      ).status,
    ).toBe(200);
    expect(gpu0(s).calls[1]?.params).toMatchObject({ beamWidth: 5, repetitionPenalty: 1.1, n: 2, lengthPenalty: 0.5 });
    const sampled = await post(s.app, { ...hello, length_penalty: 2 });
    expect([sampled.status, (await errorOf(sampled)).param]).toEqual([400, "length_penalty"]);
    const bad = await post(s.app, { ...hello, use_beam_search: true, best_of: 2, n: 3 });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).param).toBe("n");
  });

  it("returns n=2 choices with logprobs in the OpenAI shape", async () => {
    const s = setup();
    const res = await post(s.app, { ...hello, n: 2, max_tokens: 2, logprobs: true, top_logprobs: 2 });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { choices: unknown[]; usage: { completion_tokens: number } };
    expect(body.choices).toHaveLength(2);
    expect(body.choices[1]).toEqual({
      index: 1,
      message: { role: "assistant", content: "w1 w2 " },
      logprobs: {
        content: [
          {
            token: "w1 ",
            logprob: -0.5,
            bytes: [119, 49, 32],
            top_logprobs: [
              { token: "w1 ", logprob: -0.5, bytes: [119, 49, 32] },
              { token: "w2 ", logprob: -1.5, bytes: [119, 50, 32] },
            ],
          },
          {
            token: "w2 ",
            logprob: -0.5,
            bytes: [119, 50, 32],
            top_logprobs: [
              { token: "w2 ", logprob: -0.5, bytes: [119, 50, 32] },
              { token: "w3 ", logprob: -1.5, bytes: [119, 51, 32] },
            ],
          },
        ],
      },
      finish_reason: "length",
      stop_reason: null,
    });
    expect(body.usage.completion_tokens).toBe(4);
  });
});

describe("validation", () => {
  const cases: [string, unknown, string, RegExp][] = [
    ["unknown role", { messages: [{ role: "function", content: "x" }] }, "messages[0].role", /expected one of/],
    ["wrong type", { ...hello, temperature: "hot" }, "temperature", /expected number/],
    ["out of range", { ...hello, top_p: 1.5 }, "top_p", /<=1/],
    ["n above MAX_N", { ...hello, n: 9 }, "n", /<=8/],
    ["non-integer max_tokens", { ...hello, max_tokens: 1.5 }, "max_tokens", /expected int/],
    ["missing messages", { model: "x" }, "messages", /expected array/],
    ["empty messages", { messages: [] }, "messages", />=1 items/],
    [
      "content of the wrong type",
      { messages: [{ role: "user", content: 5 }] },
      "messages[0].content",
      /expected string or array/,
    ],
    [
      "unknown part type",
      { messages: [{ role: "user", content: [{ type: "audio_url", audio_url: "x" }] }] },
      "messages[0].content[0].type",
      /text.*image_url.*video_url/,
    ],
    [
      "image part without url",
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] },
      "messages[0].content[0].image_url.url",
      /expected/,
    ],
    [
      "bad base64",
      {
        messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64,@@@" } }] }],
      },
      "messages[0].content[0].image_url.url",
      /not valid base64/,
    ],
    [
      "file URL",
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "file:///etc/passwd" } }] }] },
      "messages[0].content[0].image_url.url",
      /unsupported URL scheme "file:"/,
    ],
    [
      "video data URL given as image",
      {
        messages: [
          { role: "user", content: [{ type: "image_url", image_url: { url: "data:video/mp4;base64,AAAA" } }] },
        ],
      },
      "messages[0].content[0].image_url.url",
      /expected an image data URL/,
    ],
    [
      "image in a system message",
      { messages: [{ role: "system", content: [{ type: "image_url", image_url: "https://x.org/a.png" }] }] },
      "messages[0].content",
      /only contain text/,
    ],
    ["top_logprobs without logprobs", { ...hello, top_logprobs: 3 }, "top_logprobs", /needs logprobs=true/],
    ["top_logprobs above 20", { ...hello, logprobs: true, top_logprobs: 21 }, "top_logprobs", /<=20/],
    [
      "stream_options without stream",
      { ...hello, stream_options: { include_usage: true } },
      "stream_options",
      /stream=true/,
    ],
    [
      "json_schema response_format without a schema",
      { ...hello, response_format: { type: "json_schema", json_schema: { name: "x" } } },
      "response_format.json_schema.schema",
      /JSON Schema is required/,
    ],
    ["a tool without a function", { ...hello, tools: [{ type: "function" }] }, "tools[0].function", /expected object/],
    [
      "legacy functions",
      { ...hello, functions: [{ name: "f", parameters: {} }] },
      "functions",
      /deprecated; use tools.*not supported/,
    ],
    [
      "a named tool_choice that is not a tool",
      {
        ...hello,
        tools: [{ type: "function", function: { name: "f" } }],
        tool_choice: { type: "function", function: { name: "g" } },
      },
      "tool_choice.function.name",
      /not one of the tools/,
    ],
    [
      "two constraints",
      { ...hello, response_format: { type: "json_object" }, guided_regex: "a+" },
      "guided_regex",
      /only one constraint per request \(response_format is also set\)/,
    ],
    [
      "beam search with a grammar",
      { ...hello, use_beam_search: true, guided_choice: ["a", "b"] },
      "use_beam_search",
      /beam search cannot be combined with constrained decoding \(guided_choice\)/,
    ],
    ["guided_json that is not JSON", { ...hello, guided_json: "{nope" }, "guided_json", /not valid JSON/],
    ["min_tokens above max_tokens", { ...hello, max_tokens: 2, min_tokens: 3 }, "min_tokens", /<= max_tokens \(2\)/],
    [
      "max_slice_nums 0",
      { ...hello, mm_processor_kwargs: { max_slice_nums: 0 } },
      "mm_processor_kwargs.max_slice_nums",
      />=1/,
    ],
    ["best_of without beam search", { ...hello, best_of: 3 }, "best_of", /use_beam_search/],
    ["negative repetition_penalty", { ...hello, repetition_penalty: 0 }, "repetition_penalty", />0/],
    ["a logit_bias key that is no token id", { ...hello, logit_bias: { abc: 1 } }, "logit_bias.abc", /token ids/],
    ["a logit_bias above 100", { ...hello, logit_bias: { "5": 101 } }, "logit_bias.5", /<=100/],
    ["prompt_logprobs", { ...hello, prompt_logprobs: 1 }, "prompt_logprobs", /not supported/],
    [
      "include_stop_str_in_output",
      { ...hello, include_stop_str_in_output: true },
      "include_stop_str_in_output",
      /not supported/,
    ],
    ["echo in chat", { ...hello, echo: true }, "echo", /not supported/],
    // Every integer is bounded by its wire type (a value that cannot serialize must never reach gRPC).
    ["priority 1e15", { ...hello, priority: 1e15 }, "priority", /<=2147483647/],
    ["priority -1e15", { ...hello, priority: -1e15 }, "priority", />=-2147483648/],
    ["top_k 3e9", { ...hello, top_k: 3e9 }, "top_k", /<=2147483647/],
    ["max_tokens 5e9", { ...hello, max_tokens: 5e9 }, "max_tokens", /<=4294967295/],
    ["max_completion_tokens 5e9", { ...hello, max_completion_tokens: 5e9 }, "max_completion_tokens", /<=4294967295/],
    ["min_tokens 5e9", { ...hello, min_tokens: 5e9 }, "min_tokens", /<=4294967295/],
    ["a stop token id past 2^32", { ...hello, stop_token_ids: [1, 5e9] }, "stop_token_ids[1]", /<=4294967295/],
    ["65 stop token ids", { ...hello, stop_token_ids: Array(65).fill(1) }, "stop_token_ids", /<=64/],
    [
      "1025 logit_bias entries",
      { ...hello, logit_bias: Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [String(i), 1])) },
      "logit_bias",
      /at most 1024 entries/,
    ],
    ["n times beams over the sequence cap", { ...hello, n: 8, use_beam_search: true, best_of: 40 }, "best_of", /<=8/],
  ];
  for (const [name, body, param, message] of cases) {
    it(`rejects ${name} with 400 naming ${param}`, async () => {
      const s = setup();
      await expectValidationError(s, await post(s.app, body), param, message);
    });
  }

  it("rejects too many images naming the limit", async () => {
    const s = setup({ MAX_IMAGES_PER_REQUEST: "2" });
    const part = { type: "image_url", image_url: { url: "https://x.org/a.png" } };
    const res = await post(s.app, {
      messages: [
        { role: "user", content: [part, part] },
        { role: "assistant", content: "ok" },
        { role: "user", content: [part] },
      ],
    });
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toEqual({
      message: "messages: At most 2 image(s) may be provided in one request (got 3)",
      type: "BadRequestError",
      param: "messages",
      code: 400,
    });
  });

  it("rejects too many videos", async () => {
    const s = setup({ MAX_VIDEOS_PER_REQUEST: "1" });
    const v = { type: "video_url", video_url: { url: "https://x.org/a.mp4" } };
    const res = await post(s.app, { messages: [{ role: "user", content: [v, v] }] });
    expect(res.status).toBe(400);
    expect((await errorOf(res)).message).toMatch(/At most 1 video\(s\)/);
  });

  it("rejects an oversize body naming the limit", async () => {
    const s = setup({ MAX_BODY_BYTES: "2048" });
    const res = await post(s.app, { messages: [{ role: "user", content: "x".repeat(4000) }] });
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toEqual({
      message: "request body is larger than the limit of 2048 bytes",
      type: "BadRequestError",
      param: "body",
      code: 400,
    });
    expect(await s.metrics.render()).toContain('edge_rejected_requests_total{reason="body_too_large"} 1');
  });

  it("rejects a body that is not JSON", async () => {
    const s = setup();
    const res = await post(s.app, "{not json");
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toMatchObject({ message: "request body is not valid JSON", param: "body" });
  });

  it("answers 404 for another model name", async () => {
    const s = setup();
    const res = await post(s.app, { ...hello, model: "gpt-4o" });
    expect(res.status).toBe(404);
    expect(await errorOf(res)).toMatchObject({ type: "NotFoundError", param: "model", code: 404 });
  });

  it("rejects max_tokens that do not fit the context, naming the limit", async () => {
    const s = setup();
    const res = await post(s.app, { ...hello, max_tokens: 4090 });
    expect(res.status).toBe(400);
    const e = await errorOf(res);
    expect(e.param).toBe("max_tokens");
    expect(e.message).toBe(
      "This model's maximum context length is 4096 tokens. However, you requested 4097 tokens (7 in the messages, 4090 in the completion). Please reduce the length of the messages or completion.",
    );
    expect(gpu0(s).calls).toHaveLength(0);
  });

  it("accepts only application/json bodies (415), so no web page can post text/plain or a form cross-site", async () => {
    const s = setup();
    for (const [path, type] of [
      ["/v1/chat/completions", "text/plain"],
      ["/v1/chat/completions", "application/x-www-form-urlencoded"],
      ["/v1/completions", "multipart/form-data; boundary=x"],
      ["/tokenize", "text/plain;charset=UTF-8"],
      ["/detokenize", ""],
    ] as const) {
      const res = await s.app.request(path, {
        method: "POST",
        headers: type ? { "content-type": type } : {},
        body: JSON.stringify(hello),
      });
      expect([path, type, res.status]).toEqual([path, type, 415]);
      expect(await errorOf(res)).toMatchObject({ type: "UnsupportedMediaTypeError", param: "content-type", code: 415 });
    }
    expect(s.pre.calls).toHaveLength(0);
    const ok = await s.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json; charset=utf-8" },
      body: JSON.stringify(hello),
    });
    expect(ok.status).toBe(200);
  });

  it("answers 404 in the OpenAI shape for unknown routes", async () => {
    const s = setup();
    const res = await s.app.request("/v1/embeddings", { method: "POST" });
    expect(res.status).toBe(404);
    expect((await errorOf(res)).type).toBe("NotFoundError");
  });
});

describe("backend errors", () => {
  const cases: [string, EdgeError, number, Record<string, string>, RegExp][] = [
    [
      "RESOURCE_EXHAUSTED",
      backendError("preprocess", "RESOURCE_EXHAUSTED", "queue full", 3),
      429,
      { "retry-after": "3" },
      /queue full/,
    ],
    [
      "UNAVAILABLE",
      backendError("preprocess", "UNAVAILABLE", "connection refused"),
      503,
      { "retry-after": "1" },
      /preprocess: connection refused/,
    ],
    [
      "INVALID_ARGUMENT",
      backendError("preprocess", "INVALID_ARGUMENT", "messages[0]: image is not decodable"),
      400,
      {},
      /not decodable/,
    ],
    ["DEADLINE_EXCEEDED", backendError("preprocess", "DEADLINE_EXCEEDED", "deadline exceeded"), 504, {}, /deadline/],
    [
      "UNIMPLEMENTED",
      backendError("preprocess", "UNIMPLEMENTED", "Prepare is not implemented"),
      501,
      {},
      /not implemented/,
    ],
    // An internal error's text (a stack, a path) stays in the log.
    [
      "INTERNAL",
      backendError("preprocess", "INTERNAL", "boom at /srv/x.ts:3"),
      500,
      {},
      /^preprocess: internal error$/,
    ],
  ];
  for (const [code, err, status, headers, message] of cases) {
    it(`maps ${code} from the preprocess service to ${status}`, async () => {
      const s = setup();
      s.pre.fail = err;
      const res = await post(s.app, hello);
      expect(res.status).toBe(status);
      for (const [k, v] of Object.entries(headers)) expect(res.headers.get(k)).toBe(v);
      const e = await errorOf(res);
      expect(e.code).toBe(status);
      expect(e.message).toMatch(message);
    });
  }

  it("maps a context-length INVALID_ARGUMENT to 400 naming the limit", async () => {
    const s = setup();
    s.pre.fail = backendError(
      "preprocess",
      "INVALID_ARGUMENT",
      "prompt has 5000 tokens, more than max_prompt_tokens 4095",
    );
    const res = await post(s.app, hello);
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toEqual({
      message: "prompt has 5000 tokens, more than max_prompt_tokens 4095",
      type: "BadRequestError",
      param: "messages",
      code: 400,
    });
  });

  it("maps a gpu-service RESOURCE_EXHAUSTED before the first token to 429 even for streams", async () => {
    const s = setup();
    gpu0(s).script = { failBeforeFirst: backendError("gpu-service", "RESOURCE_EXHAUSTED", "KV cache full", 2) };
    const res = await post(s.app, { ...hello, stream: true });
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("2");
    expect(res.headers.get("content-type")).toMatch(/application\/json/);
    expect(s.pool.replicas[0]?.healthy).toBe(true);
  });
});

describe("SSE streaming", () => {
  it("frames chunks as vLLM does, with include_usage and [DONE]", async () => {
    const s = setup();
    const res = await post(s.app, { ...hello, stream: true, max_tokens: 2, stream_options: { include_usage: true } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    const text = await res.text();
    const events = sseEvents(text) as Record<string, unknown>[];
    const id = (events[0] as { id: string }).id;
    const created = (events[0] as { created: number }).created;
    const base = { id, object: "chat.completion.chunk", created, model: "openbmb/MiniCPM-V-2_6" };
    expect(events).toEqual([
      {
        ...base,
        choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
        usage: null,
      },
      { ...base, choices: [{ index: 0, delta: { content: "w0 " }, logprobs: null, finish_reason: null }], usage: null },
      { ...base, choices: [{ index: 0, delta: { content: "w1 " }, logprobs: null, finish_reason: null }], usage: null },
      {
        ...base,
        choices: [{ index: 0, delta: { content: "" }, logprobs: null, finish_reason: "length", stop_reason: null }],
        usage: null,
      },
      {
        ...base,
        choices: [],
        usage: {
          prompt_tokens: 7,
          completion_tokens: 2,
          total_tokens: 9,
          prompt_tokens_details: { cached_tokens: 0, text_tokens: 7, image_tokens: 0, video_tokens: 0 },
        },
      },
      "[DONE]",
    ]);
    const m = await s.metrics.render();
    expect(m).toContain("edge_streamed_tokens_total 2");
    expect(m).toContain('edge_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 1');
    expect(m).toContain('edge_prompt_tokens_total{modality="text"} 7');
  });

  it("omits usage without include_usage, interleaves n=2 by index, streams logprobs", async () => {
    const s = setup();
    const res = await post(s.app, { ...hello, stream: true, n: 2, max_tokens: 1, logprobs: true });
    const events = sseEvents(await res.text()) as { choices: Record<string, unknown>[]; usage?: unknown }[];
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1);
    for (const ev of chunks) expect("usage" in ev).toBe(false);
    expect(chunks.map((e) => [e.choices[0]?.index, e.choices[0]?.delta])).toEqual([
      [0, { role: "assistant", content: "" }],
      [1, { role: "assistant", content: "" }],
      [0, { content: "w0 " }],
      [1, { content: "w1 " }],
      [0, { content: "" }],
      [1, { content: "" }],
    ]);
    expect(chunks[3]?.choices[0]?.logprobs).toEqual({
      content: [{ token: "w1 ", logprob: -0.5, bytes: [119, 49, 32], top_logprobs: [] }],
    });
  });

  it("puts cumulative usage on every chunk with continuous_usage_stats", async () => {
    const s = setup();
    const res = await post(s.app, {
      ...hello,
      stream: true,
      max_tokens: 2,
      stream_options: { include_usage: true, continuous_usage_stats: true },
    });
    const events = sseEvents(await res.text()) as { usage: { completion_tokens: number } | null }[];
    expect(events.slice(0, 4).map((e) => e.usage?.completion_tokens)).toEqual([0, 1, 2, 2]);
  });

  it("ends a stream that fails after its first token with an error event, then [DONE]", async () => {
    const s = setup({}, 2);
    gpu0(s).script = {
      failAfter: { tokens: 1, error: backendError("gpu-service gpu-0", "UNAVAILABLE", "connection reset") },
    };
    (s.gpus[1] as FakeGpu).info_.queueDepth = 5; // route to gpu-0
    await s.pool.poll();
    const res = await post(s.app, { ...hello, stream: true, max_tokens: 3 });
    expect(res.status).toBe(200);
    const events = sseEvents(await res.text());
    expect(events.slice(-2)).toEqual([
      {
        error: {
          message: "gpu-service gpu-0: connection reset",
          type: "ServiceUnavailableError",
          param: null,
          code: 503,
        },
      },
      "[DONE]",
    ]);
    expect((events[1] as { choices: { delta: unknown }[] }).choices[0]?.delta).toEqual({ content: "w0 " });
    // Not retried after the first token; one transport failure alone does not eject the replica.
    expect((s.gpus[1] as FakeGpu).calls).toHaveLength(0);
    expect(s.pool.replicas[0]?.healthy).toBe(true);
    expect(s.pool.replicas[0]?.failures).toBe(1);
  });

  it("ends a stream that sends nothing for STREAM_STALL_TIMEOUT_MS with an error event and [DONE]", async () => {
    const s = setup({ STREAM_STALL_TIMEOUT_MS: "200" });
    gpu0(s).script = { hangAfterFirst: true };
    const res = await post(s.app, { ...hello, stream: true });
    expect(res.status).toBe(200);
    const events = sseEvents(await res.text());
    expect(events.slice(-2)).toEqual([
      {
        error: {
          message: "no token for 200 ms (STREAM_STALL_TIMEOUT_MS): the stream was ended",
          type: "GatewayTimeoutError",
          param: null,
          code: 504,
        },
      },
      "[DONE]",
    ]);
    expect(gpu0(s).cancelled).toBe(1);
  });

  it("cancels the gRPC call when the client disconnects mid-stream", async () => {
    const s = setup();
    gpu0(s).script = { hangAfterFirst: true };
    const res = await post(s.app, { ...hello, stream: true });
    const reader = await readUntil(res, "w0 ");
    expect(gpu0(s).open).toBe(1);
    await reader.cancel();
    await expect.poll(() => gpu0(s).open).toBe(0);
    expect(gpu0(s).cancelled).toBe(1);
    await expect.poll(async () => await s.metrics.render()).toContain("edge_requests_in_flight 0");
  });

  it("cancels the gRPC call when a non-streaming client disconnects", async () => {
    const s = setup();
    gpu0(s).script = { hangAfterFirst: true };
    const ac = new AbortController();
    const pending = post(s.app, hello, {}, { signal: ac.signal });
    await expect.poll(() => gpu0(s).open).toBe(1);
    ac.abort();
    const res = await pending;
    expect(res.status).toBe(499);
    expect(gpu0(s).open).toBe(0);
    expect(gpu0(s).cancelled).toBe(1);
  });
});

describe("auth, rate limits, concurrency, CORS", () => {
  it("requires a configured bearer key on /v1 but not on /health or /metrics", async () => {
    const s = setup({ API_KEYS: "k1,k2" });
    expect((await post(s.app, hello)).status).toBe(401);
    const wrong = await post(s.app, hello, { authorization: "Bearer k3" });
    expect(wrong.status).toBe(401);
    expect(await errorOf(wrong)).toMatchObject({ type: "AuthenticationError", code: 401 });
    expect((await post(s.app, hello, { authorization: "Basic k1" })).status).toBe(401);
    expect((await post(s.app, hello, { authorization: "Bearer k2" })).status).toBe(200);
    expect((await s.app.request("/v1/models", { headers: { authorization: "Bearer k1" } })).status).toBe(200);
    expect((await s.app.request("/v1/models")).status).toBe(401);
    expect((await s.app.request("/health")).status).toBe(200);
    expect((await s.app.request("/metrics")).status).toBe(200);
    expect(await s.metrics.render()).toContain('edge_rejected_requests_total{reason="auth"} 4');
  });

  it("limits requests per minute per key with 429 and Retry-After", async () => {
    const s = setup({ API_KEYS: "a,b", RATE_LIMIT_RPM: "2" });
    const as = (k: string) => post(s.app, hello, { authorization: `Bearer ${k}` });
    expect((await as("a")).status).toBe(200);
    expect((await as("a")).status).toBe(200);
    const third = await as("a");
    expect(third.status).toBe(429);
    expect(Number(third.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await errorOf(third)).toMatchObject({
      type: "RateLimitError",
      message: "rate limit of 2 requests per minute reached",
    });
    expect((await as("b")).status).toBe(200);
  });

  it("limits tokens per minute per key", async () => {
    const s = setup({ RATE_LIMIT_TPM: "10" });
    expect((await post(s.app, hello)).status).toBe(200); // 7 prompt + 4 completion tokens: bucket now -1
    const res = await post(s.app, hello);
    expect(res.status).toBe(429);
    expect((await errorOf(res)).message).toBe("rate limit of 10 tokens per minute reached");
    expect(await s.metrics.render()).toContain('edge_rejected_requests_total{reason="rate_limit_tokens"} 1');
  });

  it("answers 429 when the concurrency cap is reached", async () => {
    const s = setup({ MAX_CONCURRENT_REQUESTS: "1" });
    gpu0(s).script = { hangAfterFirst: true };
    const first = await post(s.app, { ...hello, stream: true });
    const reader = (first.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const second = await post(s.app, hello);
    expect(second.status).toBe(429);
    expect(second.headers.get("retry-after")).toBe("1");
    expect((await errorOf(second)).message).toMatch(/limit of 1 concurrent sequences/);
    await reader.cancel();
    gpu0(s).script = {};
    await expect.poll(async () => (await post(s.app, hello)).status).toBe(200);
  });

  it("sends CORS headers only when configured", async () => {
    const open = setup({ CORS_ORIGINS: "https://app.example" });
    const res = await open.app.request("/v1/models", { headers: { origin: "https://app.example" } });
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.example");
    const pre = await open.app.request("/v1/chat/completions", {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "POST" },
    });
    expect(pre.status).toBe(204);
    const closed = setup();
    const r2 = await closed.app.request("/v1/models", { headers: { origin: "https://app.example" } });
    expect(r2.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("several gpu-service replicas", () => {
  it("routes to the least-loaded replica by Info's queue depth and KV usage", async () => {
    const s = setup({}, 3);
    const [a, b, c] = s.gpus as [FakeGpu, FakeGpu, FakeGpu];
    a.info_.queueDepth = 3;
    b.info_.queueDepth = 0;
    b.info_.kvUsedBlocks = 900;
    c.info_.queueDepth = 0;
    c.info_.kvUsedBlocks = 100;
    await s.pool.poll();
    for (let i = 0; i < 3; i++) expect((await post(s.app, hello)).status).toBe(200);
    expect([a.calls.length, b.calls.length, c.calls.length]).toEqual([0, 0, 3]);
  });

  it("retries on another replica when one fails before the first token, and marks it unhealthy until healthy again", async () => {
    const s = setup({ GPU_EJECT_AFTER_FAILURES: "1" }, 2);
    const [a, b] = s.gpus as [FakeGpu, FakeGpu];
    b.info_.queueDepth = 1;
    await s.pool.poll();
    a.script = { failBeforeFirst: backendError("gpu-service gpu-0", "UNAVAILABLE", "connection refused") };
    const res = await post(s.app, hello);
    expect(res.status).toBe(200);
    expect([a.calls.length, b.calls.length]).toEqual([1, 1]);
    expect(s.pool.replicas.map((r) => r.healthy)).toEqual([false, true]);
    // While unhealthy it gets no traffic, though its load is lower.
    expect((await post(s.app, hello)).status).toBe(200);
    expect([a.calls.length, b.calls.length]).toEqual([1, 2]);
    expect(await s.metrics.render()).toContain('edge_backend_retries_total{backend="gpu-0"} 1');
    // Its health check passes again: back in rotation.
    a.script = {};
    await s.pool.poll();
    expect(s.pool.replicas.map((r) => r.healthy)).toEqual([true, true]);
    expect((await post(s.app, hello)).status).toBe(200);
    expect([a.calls.length, b.calls.length]).toEqual([2, 2]);
  });

  it("answers 503 when every replica fails before the first token", async () => {
    const s = setup({ GPU_EJECT_AFTER_FAILURES: "1" }, 2);
    for (const g of s.gpus)
      g.script = { failBeforeFirst: backendError(`gpu-service ${g.address}`, "UNAVAILABLE", "down") };
    const res = await post(s.app, hello);
    expect(res.status).toBe(503);
    expect(s.gpus.map((g) => g.calls.length)).toEqual([1, 1]);
    const again = await post(s.app, hello);
    expect(again.status).toBe(503);
    expect((await errorOf(again)).message).toMatch(/no healthy gpu-service backend/);
  });

  it("ejects a replica only after consecutive transport failures; one good poll takes it back", async () => {
    const s = setup({}, 1);
    const a = gpu0(s);
    a.up = false;
    await s.pool.poll();
    await s.pool.poll();
    expect(s.pool.replicas[0]?.healthy).toBe(true);
    a.up = true;
    await s.pool.poll(); // the count starts again
    a.up = false;
    await s.pool.poll();
    await s.pool.poll();
    expect(s.pool.replicas[0]?.healthy).toBe(true);
    await s.pool.poll();
    expect(s.pool.replicas[0]?.healthy).toBe(false);
    expect((await post(s.app, hello)).status).toBe(503);
    a.up = true;
    await s.pool.poll();
    expect(s.pool.replicas[0]?.healthy).toBe(true);
  });

  it("never changes a replica's health for a client's error, however often it happens", async () => {
    const s = setup({}, 1);
    for (const [code, status] of [
      ["INVALID_ARGUMENT", 400],
      ["INTERNAL", 500], // e.g. a request message that does not serialize
      ["FAILED_PRECONDITION", 400],
      ["OUT_OF_RANGE", 400],
    ] as const) {
      for (let i = 0; i < 4; i++) {
        gpu0(s).script = { failBeforeFirst: backendError("gpu-service gpu-0", code, "about this request") };
        expect((await post(s.app, hello)).status).toBe(status);
      }
    }
    expect(s.pool.replicas[0]?.healthy).toBe(true);
    expect(s.pool.replicas[0]?.failures).toBe(0);
    gpu0(s).script = {};
    expect((await post(s.app, hello)).status).toBe(200);
  });

  it("does not retry a request the backend rejected as invalid", async () => {
    const s = setup({}, 2);
    for (const g of s.gpus)
      g.script = { failBeforeFirst: backendError("gpu-service", "INVALID_ARGUMENT", "params.top_k: bad") };
    const res = await post(s.app, hello);
    expect(res.status).toBe(400);
    expect(s.gpus.map((g) => g.calls.length).reduce((x, y) => x + y)).toBe(1);
  });
});

describe("GET /health, /v1/models, /metrics, POST render", () => {
  it("is healthy only when preprocess and a gpu-service replica are", async () => {
    const s = setup({ GPU_EJECT_AFTER_FAILURES: "1" }, 2);
    const ok = await s.app.request("/health");
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({
      status: "ok",
      preprocess: { healthy: true },
      gpu_service: [
        { address: "gpu-0", healthy: true },
        { address: "gpu-1", healthy: true },
      ],
    });
    (s.gpus[0] as FakeGpu).up = false;
    expect((await s.app.request("/health")).status).toBe(200);
    (s.gpus[1] as FakeGpu).up = false;
    const down = await s.app.request("/health");
    expect(down.status).toBe(503);
    expect(((await down.json()) as { gpu_service: unknown[] }).gpu_service[1]).toEqual({
      address: "gpu-1",
      healthy: false,
      error: "Info failed: gpu-1: connection refused",
    });
    for (const g of s.gpus) (g as FakeGpu).up = true;
    s.pre.up = false;
    expect((await s.app.request("/health")).status).toBe(503);
  });

  it("lists the served model", async () => {
    const s = setup();
    const res = await s.app.request("/v1/models");
    const body = (await res.json()) as { object: string; data: Record<string, unknown>[] };
    expect(body.object).toBe("list");
    expect(body.data).toHaveLength(1);
    expect(body.data[0]).toMatchObject({
      id: "openbmb/MiniCPM-V-2_6",
      object: "model",
      owned_by: "minicpmv",
      max_model_len: 4096,
    });
    const named = setup({ SERVED_MODEL_NAME: "minicpm-v" });
    const b2 = (await (await named.app.request("/v1/models")).json()) as { data: { id: string }[] };
    expect(b2.data[0]?.id).toBe("minicpm-v");
    expect((await post(named.app, { ...hello, model: "minicpm-v" })).status).toBe(200);
    // models.retrieve, with the "/" in the default id.
    const one = await s.app.request("/v1/models/openbmb/MiniCPM-V-2_6");
    expect(one.status).toBe(200);
    expect(await one.json()).toEqual(body.data[0]);
    const other = await s.app.request("/v1/models/gpt-4o");
    expect(other.status).toBe(404);
    expect(await errorOf(other)).toMatchObject({ type: "NotFoundError", param: "model", code: 404 });
  });

  it("exposes Prometheus metrics", async () => {
    const s = setup();
    await post(s.app, hello);
    await post(s.app, { messages: [] });
    const res = await s.app.request("/metrics");
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const m = await res.text();
    expect(m).toContain('edge_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 1');
    expect(m).toContain('edge_http_requests_total{method="POST",route="/v1/chat/completions",status="400"} 1');
    expect(m).toContain(
      'edge_http_request_duration_seconds_count{method="POST",route="/v1/chat/completions",status="200"} 1',
    );
    expect(m).toContain("edge_generated_tokens_total 4");
    expect(m).toContain('edge_backend_healthy{backend="gpu-0",service="gpu-service"} 1');
    expect(m).toContain("edge_time_to_first_token_seconds_count 1");
  });

  it("renders the token count and layout of a request without generating", async () => {
    const s = setup();
    const res = await s.app.request("/v1/chat/completions/render", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "two things" },
              { type: "image_url", image_url: { url: "https://x.org/a.png" } },
            ],
          },
        ],
      }),
    });
    expect(res.status).toBe(200);
    await s.pool.poll();
    expect(await res.json()).toEqual({
      object: "chat.completion.render",
      model: "openbmb/MiniCPM-V-2_6",
      prompt_tokens: 7 + FAKE_TOKENS_PER_IMAGE,
      prompt_tokens_details: { text_tokens: 7, image_tokens: FAKE_TOKENS_PER_IMAGE, video_tokens: 0 },
      max_model_len: 4096,
      max_completion_tokens: 4096 - 7 - FAKE_TOKENS_PER_IMAGE,
      media: [
        {
          index: 0,
          type: "image",
          source_size: [14, 14],
          grid: null,
          slices: 1,
          slice_sizes: [[14, 14]],
          placeholder_tokens: 64,
        },
      ],
      prompt_text: "<|im_start|>user",
    });
    expect(gpu0(s).calls).toHaveLength(0);
  });
});
