import { describe, expect, it } from "vitest";
import { backendError } from "../errors";
import {
  errorOf,
  expectValidationError,
  gpu0,
  type Harness,
  postJson,
  readUntil,
  setup,
  sseEvents,
} from "../testing/app-harness";

function post(app: Harness["app"], body: unknown, init: RequestInit = {}) {
  return postJson(app, "/v1/completions", body, {}, init);
}

// FakeGpu: choice i's k-th token is "w<seed+i+k> " with logprob -0.5, alternative j "w<seed+i+k+j> " at -0.5-j.
const words = (from: number, count: number) => Array.from({ length: count }, (_, k) => `w${from + k} `).join("");

describe("POST /v1/completions (non-streaming)", () => {
  it("returns a text_completion for a text prompt, 16 tokens by default, raw prompt to Prepare", async () => {
    const s = setup();
    const res = await post(s.app, { model: "openbmb/MiniCPM-V-2_6", prompt: "Once upon a time" });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(String(body.id)).toMatch(/^cmpl-[0-9a-f]{32}$/);
    expect(typeof body.created).toBe("number");
    expect(body).toMatchObject({
      object: "text_completion",
      model: "openbmb/MiniCPM-V-2_6",
      choices: [{ index: 0, text: words(0, 16), logprobs: null, finish_reason: "length", stop_reason: null }],
      usage: {
        prompt_tokens: 4,
        completion_tokens: 16,
        total_tokens: 20,
        prompt_tokens_details: { cached_tokens: 0, text_tokens: 4, image_tokens: 0, video_tokens: 0 },
      },
    });
    expect(res.headers.get("x-prompt-tokens")).toBe("4");
    expect(res.headers.get("x-prefill-time-ms")).toBe("3.0");
    expect(s.pre.calls).toEqual([
      {
        requestId: res.headers.get("x-request-id"),
        messages: [],
        rawPrompt: "Once upon a time",
        options: { maxPromptTokens: 4095 },
        addGenerationPrompt: false,
      },
    ]);
    const params = gpu0(s).calls[0]?.params;
    expect(params).toMatchObject({ n: 1, maxTokens: 16, logprobs: false, minTokens: 0, stop: [] });
    // Unset sampling fields stay unset: the gpu-service applies the reference defaults.
    const sampling = ["temperature", "topP", "topK", "minP", "repetitionPenalty", "seed", "logitBias"];
    expect(sampling.filter((k) => k in (params ?? {}))).toEqual([]);
  });

  it("passes sampling parameters, vLLM extras and logit_bias; shrinks the default max_tokens to the context", async () => {
    const s = setup();
    gpu0(s).info_.contextLength = 10;
    const res = await post(s.app, {
      prompt: "one two three four five six seven",
      temperature: 0.3,
      top_p: 0.9,
      top_k: 5,
      min_p: 0.1,
      repetition_penalty: 1.1,
      presence_penalty: 0.2,
      frequency_penalty: 0.4,
      seed: 3,
      stop: ["\n"],
      stop_token_ids: [151645],
      ignore_eos: true,
      min_tokens: 1,
      logit_bias: { "42": -100 },
      best_of: 1,
      priority: 2,
      user: "u",
    });
    expect(res.status).toBe(200);
    expect(gpu0(s).calls[0]).toMatchObject({
      priority: 2,
      params: {
        temperature: 0.3,
        topP: 0.9,
        topK: 5,
        minP: 0.1,
        repetitionPenalty: 1.1,
        presencePenalty: 0.2,
        frequencyPenalty: 0.4,
        seed: 3,
        stop: ["\n"],
        stopTokenIds: [151645],
        ignoreEos: true,
        minTokens: 1,
        logitBias: { 42: -100 },
        maxTokens: 3, // 10 - 7 prompt tokens
      },
    });
  });

  it("indexes a batch's choices promptIndex*n + j, echoes each prompt, and sums usage", async () => {
    const s = setup();
    const res = await post(s.app, { prompt: ["a b", "c d e"], n: 2, max_tokens: 2, echo: true, seed: 10 });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { choices: { index: number; text: string }[]; usage: unknown };
    expect(body.choices.map((c) => [c.index, c.text])).toEqual([
      [0, `a b${words(10, 2)}`],
      [1, `a b${words(11, 2)}`],
      [2, `c d e${words(10, 2)}`],
      [3, `c d e${words(11, 2)}`],
    ]);
    expect(body.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 });
    expect(s.pre.calls.map((c) => c.rawPrompt)).toEqual(["a b", "c d e"]);
    expect(gpu0(s).calls.map((c) => c.prompt.tokenIds.length)).toEqual([2, 3]);
    // Timings of several calls do not add up to one request's: only token headers.
    expect(res.headers.get("x-generated-tokens")).toBe("8");
    expect(res.headers.get("x-prefill-time-ms")).toBeNull();
  });

  it("sends token-id prompts as ids and echoes their decoded text", async () => {
    const s = setup();
    const one = await post(s.app, { prompt: [7, 8, 9], max_tokens: 1, echo: true });
    expect(((await one.json()) as { choices: { text: string }[] }).choices[0]?.text).toBe("t7 t8 t9w0 ");
    const batch = await post(s.app, { prompt: [[1], [2, 3]], max_tokens: 1 });
    expect(batch.status).toBe(200);
    expect(s.pre.calls.map((c) => [c.messages, c.promptTokenIds, c.rawPrompt])).toEqual([
      [[], [7, 8, 9], undefined],
      [[], [1], undefined],
      [[], [2, 3], undefined],
    ]);
  });

  it("returns logprobs in the legacy shape: tokens, token_logprobs, top_logprobs, text_offset", async () => {
    const s = setup();
    const res = await post(s.app, { prompt: "hi", max_tokens: 2, logprobs: 2 });
    const body = (await res.json()) as { choices: { logprobs: unknown }[] };
    expect(body.choices[0]?.logprobs).toEqual({
      tokens: ["w0 ", "w1 "],
      token_logprobs: [-0.5, -0.5],
      top_logprobs: [
        { "w0 ": -0.5, "w1 ": -1.5 },
        { "w1 ": -0.5, "w2 ": -1.5 },
      ],
      text_offset: [0, 3],
    });
    expect(gpu0(s).calls[0]?.params).toMatchObject({ logprobs: true, topLogprobs: 2 });
    // logprobs=0: no alternatives, but the chosen token's logprob is always there.
    const zero = await post(s.app, { prompt: "hi", max_tokens: 1, logprobs: 0 });
    expect(((await zero.json()) as { choices: { logprobs: unknown }[] }).choices[0]?.logprobs).toEqual({
      tokens: ["w0 "],
      token_logprobs: [-0.5],
      top_logprobs: [{ "w0 ": -0.5 }],
      text_offset: [0],
    });
  });
});

describe("POST /v1/completions (SSE)", () => {
  it("streams text_completion chunks with logprobs offsets, finish, a usage chunk and [DONE]", async () => {
    const s = setup();
    const res = await post(s.app, {
      prompt: "hi there",
      max_tokens: 2,
      logprobs: 1,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
    const events = sseEvents(await res.text()) as Record<string, unknown>[];
    const id = events[0]?.id as string;
    expect(id).toMatch(/^cmpl-[0-9a-f]{32}$/);
    const head = { id, object: "text_completion", created: events[0]?.created, model: "openbmb/MiniCPM-V-2_6" };
    // logprobs=1: the one alternative the fake sends is the chosen token itself.
    const lp = (tok: string, offset: number) => ({
      tokens: [tok],
      token_logprobs: [-0.5],
      top_logprobs: [{ [tok]: -0.5 }],
      text_offset: [offset],
    });
    expect(events).toEqual([
      {
        ...head,
        choices: [{ index: 0, text: "w0 ", logprobs: lp("w0 ", 0), finish_reason: null, stop_reason: null }],
        usage: null,
      },
      {
        ...head,
        choices: [{ index: 0, text: "w1 ", logprobs: lp("w1 ", 3), finish_reason: null, stop_reason: null }],
        usage: null,
      },
      {
        ...head,
        choices: [{ index: 0, text: "", logprobs: null, finish_reason: "length", stop_reason: null }],
        usage: null,
      },
      {
        ...head,
        choices: [],
        usage: {
          prompt_tokens: 2,
          completion_tokens: 2,
          total_tokens: 4,
          prompt_tokens_details: { cached_tokens: 0, text_tokens: 2, image_tokens: 0, video_tokens: 0 },
        },
      },
      "[DONE]",
    ]);
  });

  it("streams a batch: echo chunks first, each choice's text under its own index, one summed usage", async () => {
    const s = setup();
    const res = await post(s.app, {
      prompt: ["x", "y z"],
      n: 2,
      max_tokens: 2,
      echo: true,
      stream: true,
      stream_options: { include_usage: true },
    });
    const events = sseEvents(await res.text());
    expect(events.at(-1)).toBe("[DONE]");
    type Chunk = { choices: { index: number; text: string; finish_reason: string | null }[]; usage?: unknown };
    const chunks = events.slice(0, -1) as Chunk[];
    expect(chunks.slice(0, 4).map((c) => c.choices[0]?.text)).toEqual(["x", "x", "y z", "y z"]);
    const text = new Map<number, string>();
    const finished: number[] = [];
    for (const c of chunks) {
      for (const ch of c.choices) {
        text.set(ch.index, (text.get(ch.index) ?? "") + ch.text);
        if (ch.finish_reason) finished.push(ch.index);
      }
    }
    expect([...text.entries()].sort((a, b) => a[0] - b[0])).toEqual([
      [0, `x${words(0, 2)}`],
      [1, `x${words(1, 2)}`],
      [2, `y z${words(0, 2)}`],
      [3, `y z${words(1, 2)}`],
    ]);
    expect(finished.sort()).toEqual([0, 1, 2, 3]);
    const usage = chunks.filter((c) => c.choices.length === 0);
    expect(usage).toHaveLength(1);
    expect(usage[0]?.usage).toMatchObject({
      prompt_tokens: 3,
      completion_tokens: 8,
      total_tokens: 11,
    });
  });

  it("puts the usage so far on every chunk with continuous_usage_stats", async () => {
    const s = setup();
    const res = await postJson(s.app, "/v1/completions", {
      prompt: ["x", "y z"],
      max_tokens: 2,
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
    });
    type Chunk = { choices: { text: string }[]; usage: { prompt_tokens: number; completion_tokens: number } };
    const chunks = sseEvents(await res.text()).slice(0, -1) as Chunk[];
    // Prompts of 1 and 2 tokens; completion tokens grow by one per text chunk up to 2 x 2.
    expect(chunks.every((c) => c.usage.prompt_tokens === 3)).toBe(true);
    const seen = chunks.map((c) => c.usage.completion_tokens);
    expect([...seen].sort((a, b) => a - b)).toEqual(seen);
    expect(seen.at(-1)).toBe(4);
  });

  it("reports a mid-stream failure as a last error event, then [DONE], and closes every stream", async () => {
    const s = setup();
    gpu0(s).script = {
      failAfter: { tokens: 1, error: backendError("gpu-service gpu-0", "UNAVAILABLE", "connection reset") },
    };
    const res = await post(s.app, { prompt: ["a", "b"], max_tokens: 3, stream: true });
    expect(res.status).toBe(200);
    const events = sseEvents(await res.text());
    expect(events.at(-2)).toEqual({
      error: {
        message: "gpu-service gpu-0: connection reset",
        type: "ServiceUnavailableError",
        param: null,
        code: 503,
      },
    });
    expect(events.at(-1)).toBe("[DONE]");
    expect(gpu0(s).open).toBe(0);
    await expect.poll(async () => await s.metrics.render()).toContain("edge_requests_in_flight 0");
  });

  it("cancels every Generate call of a batch when the client goes away", async () => {
    const s = setup();
    gpu0(s).script = { hangAfterFirst: true };
    const res = await post(s.app, { prompt: ["a", "b"], stream: true });
    const reader = await readUntil(res, "w0 ");
    expect(gpu0(s).open).toBe(2);
    await reader.cancel();
    await expect.poll(() => gpu0(s).open).toBe(0);
    expect(gpu0(s).cancelled).toBe(2);
  });
});

describe("POST /v1/completions validation", () => {
  const hi = { prompt: "hi" };
  const cases: [string, unknown, string, RegExp][] = [
    ["a missing prompt", { model: "x" }, "prompt", /expected a string, a list of strings, a list of token ids/],
    ["an empty prompt", { prompt: "" }, "prompt", /must not be empty/],
    ["an empty batch", { prompt: [] }, "prompt", /must not be empty/],
    ["a mixed batch", { prompt: ["a", 1] }, "prompt[1]", /expected a string/],
    [
      "a negative token id",
      { prompt: [[1], [2, -3]] },
      "prompt[1][1]",
      /token id \(an integer in \[0, 4294967295\]\), got -3/,
    ],
    [
      "a token id past 2^32",
      { prompt: [5e9] },
      "prompt[0]",
      /token id \(an integer in \[0, 4294967295\]\), got 5000000000/,
    ],
    [
      "32 prompts x n=8",
      { prompt: Array(32).fill("a"), n: 8 },
      "n",
      /256 sequences \(32 prompt\(s\) x n=8\), over the limit of 32/,
    ],
    ["a batch over the limit", { prompt: Array(33).fill("a") }, "prompt", /at most 32 prompts, got 33/],
    ["suffix", { ...hi, suffix: "end" }, "suffix", /not supported/],
    ["echo with logprobs", { ...hi, echo: true, logprobs: 1 }, "echo", /does not compute/],
    ["best_of other than n", { ...hi, n: 2, best_of: 3 }, "best_of", /equal to n \(2\)/],
    ["logprobs above 5", { ...hi, logprobs: 6 }, "logprobs", /<=5/],
    ["n above MAX_N", { ...hi, n: 9 }, "n", /<=8/],
    ["stream_options without stream", { ...hi, stream_options: { include_usage: true } }, "stream_options", /stream/],
    ["min_tokens above the default max_tokens", { ...hi, min_tokens: 17 }, "min_tokens", /<= max_tokens \(16\)/],
    ["a logit_bias key that is no token id", { ...hi, logit_bias: { x: 1 } }, "logit_bias.x", /token ids/],
  ];
  for (const [name, body, param, message] of cases) {
    it(`rejects ${name} with 400 naming ${param}`, async () => {
      const s = setup();
      await expectValidationError(s, await post(s.app, body), param, message);
    });
  }

  it("names the prompt element of a token id outside the vocabulary", async () => {
    const s = setup();
    const single = await post(s.app, { prompt: [5, 151666] });
    expect(single.status).toBe(400);
    expect(await errorOf(single)).toEqual({
      message: "prompt[1]: 151666 is outside the vocabulary (0..151665)",
      type: "BadRequestError",
      param: "prompt[1]",
      code: 400,
    });
    const batch = await post(s.app, { prompt: [[5], [6, 7, 151666]] });
    expect((await errorOf(batch)).param).toBe("prompt[1][2]");
    // The batch's other prompt was started and then closed.
    expect(gpu0(s).open).toBe(0);
  });

  it("rejects max_tokens that do not fit the context, and another model's name", async () => {
    const s = setup();
    const long = await post(s.app, { prompt: "a b c", max_tokens: 4094 });
    expect(long.status).toBe(400);
    expect(await errorOf(long)).toEqual({
      message:
        "This model's maximum context length is 4096 tokens. However, you requested 4097 tokens (3 in the prompt, 4094 in the completion). Please reduce the length of the prompt or completion.",
      type: "BadRequestError",
      param: "max_tokens",
      code: 400,
    });
    const other = await post(s.app, { prompt: "a", model: "gpt-3.5-turbo-instruct" });
    expect(other.status).toBe(404);
    expect((await errorOf(other)).param).toBe("model");
  });

  it("is guarded by the API key like chat", async () => {
    const s = setup({ API_KEYS: "k1" });
    expect((await post(s.app, { prompt: "a" })).status).toBe(401);
    const ok = await postJson(s.app, "/v1/completions", { prompt: "a" }, { authorization: "Bearer k1" });
    expect(ok.status).toBe(200);
  });
});
