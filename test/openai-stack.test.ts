/**
 * Issue 7 acceptance: the official `openai` npm client, unmodified, against the real stack
 * (preprocess + one gpu-service + edge as child processes on loopback, checkpoint tiny-a).
 *
 *   OpenAI client ──HTTP/SSE──> edge ──gRPC──> preprocess (prompt ids, slices)
 *                                     └─gRPC──> gpu-service (tiny-a on ONNX Runtime CPU)
 *
 * Token counts are exact: they follow from the images' sizes and MiniCPM-V's slicing rules. The greedy
 * answer of the golden case `iii_one_image_sliced` must equal the reference's greedy tokens, decoded.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadTokenizer } from "@minicpmv/preprocess/tokenizer";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, stopStackChecked } from "./helpers/stack";
import { makeMp4 } from "./web-chat-scenario";

const GOLDEN = join(import.meta.dirname, "../../shared/golden");
const MODEL = "tiny-a";

const pngUrl = (name: string) =>
  `data:image/png;base64,${readFileSync(join(GOLDEN, "images", `${name}.png`)).toString("base64")}`;

/** The golden video frames as JPEG (converted by the project's ffmpeg), base64, for vLLM's pre-sampled form. */
function jpegFrames(n: number): string[] {
  const ffmpeg = (createRequire(import.meta.url)("@ffmpeg-installer/ffmpeg") as { path: string }).path;
  const dir = mkdtempSync(join(tmpdir(), "openai-stack-frames-"));
  try {
    return Array.from({ length: n }, (_, i) => {
      const out = join(dir, `f${i}.jpg`);
      const src = join(GOLDEN, "images", `frame_${i}_640x360.png`);
      execFileSync(ffmpeg, ["-hide_banner", "-loglevel", "error", "-i", src, "-q:v", "3", out]);
      return readFileSync(out).toString("base64");
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A user message with media parts then a question; video_url is vLLM's extension the openai types lack. */
function userMessage(parts: { image?: string[]; video?: string[] }, text: string): OpenAI.ChatCompletionMessageParam {
  const content = [
    ...(parts.image ?? []).map((url) => ({ type: "image_url", image_url: { url } })),
    ...(parts.video ?? []).map((url) => ({ type: "video_url", video_url: { url } })),
    { type: "text", text },
  ];
  return { role: "user", content: content as unknown as OpenAI.ChatCompletionContentPart[] };
}

interface Golden {
  msgs_content: string[];
  num_tokens: number;
  greedy_tokens: number[];
}

describe("the openai client against the real stack (tiny-a)", () => {
  let stack: Stack;
  let client: OpenAI;

  beforeAll(async () => {
    stack = await startStack({ gpuReplicas: 1 });
    client = new OpenAI({ baseURL: `${stack.edgeUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 90_000 });
  });

  afterAll(async () => {
    await stopStackChecked(stack);
  });

  it("lists the model and answers a non-streaming request", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect(await client.models.retrieve(MODEL)).toMatchObject({ id: MODEL, object: "model" });
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: "system", content: "Answer briefly." },
        { role: "user", content: "Hello there" },
      ],
      max_tokens: 5,
      temperature: 0,
      ignore_eos: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(r.object).toBe("chat.completion");
    expect(r.model).toBe(MODEL);
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]?.message.role).toBe("assistant");
    expect(r.choices[0]?.finish_reason).toBe("length");
    expect(r.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(r.usage).toEqual({
      prompt_tokens: PROMPT.systemHello,
      completion_tokens: 5,
      total_tokens: PROMPT.systemHello + 5,
      prompt_tokens_details: { cached_tokens: 0, text_tokens: PROMPT.systemHello, image_tokens: 0, video_tokens: 0 },
    });
  });

  it("streams an image question with include_usage; the deltas add up to the non-streaming answer", async () => {
    const messages = [userMessage({ image: [pngUrl("img_640x480")] }, "What is in the picture?")];
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 6,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = "";
    let roles = 0;
    let finish: string | null = null;
    let contentChunks = 0;
    const usages: OpenAI.CompletionUsage[] = [];
    for await (const ch of stream) {
      const c = ch.choices[0];
      if (c?.delta.role === "assistant") roles++;
      if (c?.delta.content) {
        text += c.delta.content;
        contentChunks++;
      }
      if (c?.finish_reason) finish = c.finish_reason;
      if (ch.usage) usages.push(ch.usage);
    }
    expect(roles).toBe(1);
    expect(contentChunks).toBeGreaterThan(1);
    expect(finish).toBe("length");
    // One usage chunk, last; 640x480 -> overview + 2x1 tiles = 3 slices of 64 query tokens.
    expect(usages).toHaveLength(1);
    expect(usages[0]).toEqual({
      prompt_tokens: PROMPT.oneImage,
      completion_tokens: 6,
      total_tokens: PROMPT.oneImage + 6,
      prompt_tokens_details: {
        cached_tokens: expect.any(Number),
        text_tokens: PROMPT.oneImage - IMAGE_640x480,
        image_tokens: IMAGE_640x480,
        video_tokens: 0,
      },
    });
    const once = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 6,
      temperature: 0,
      ignore_eos: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(once.choices[0]?.message.content).toBe(text);
    // The same image again: its prompt prefix is served from the prefix cache.
    expect(once.usage?.prompt_tokens_details?.cached_tokens).toBeGreaterThan(0);
  });

  it("counts two images of different sizes", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [userMessage({ image: [pngUrl("img_640x480"), pngUrl("img_097x131")] }, "Compare them.")],
      max_tokens: 2,
    });
    expect(r.usage?.prompt_tokens_details).toEqual({
      cached_tokens: expect.any(Number),
      text_tokens: (r.usage?.prompt_tokens ?? 0) - IMAGE_640x480 - IMAGE_097x131,
      image_tokens: IMAGE_640x480 + IMAGE_097x131,
      video_tokens: 0,
    });
    expect(r.usage?.prompt_tokens).toBe(PROMPT.twoImages);
  });

  it("takes a video as an mp4 data URL and as vLLM's pre-sampled JPEG frames", async () => {
    const mp4 = `data:video/mp4;base64,${makeMp4(2).toString("base64")}`;
    const a = await client.chat.completions.create({
      model: MODEL,
      messages: [userMessage({ video: [mp4] }, "What happens?")],
      max_tokens: 2,
    });
    expect(a.usage?.prompt_tokens_details).toMatchObject({ image_tokens: 0, video_tokens: VIDEO_MP4 });
    const frames = jpegFrames(3);
    const b = await client.chat.completions.create({
      model: MODEL,
      messages: [userMessage({ video: [`data:video/jpeg;base64,${frames.join(",")}`] }, "What happens?")],
      max_tokens: 2,
    });
    expect(b.usage?.prompt_tokens_details).toMatchObject({ image_tokens: 0, video_tokens: VIDEO_3_FRAMES });
  });

  it("returns logprobs with top_logprobs in OpenAI's shape", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Count to three." }],
      max_tokens: 4,
      temperature: 0,
      ignore_eos: true,
      logprobs: true,
      top_logprobs: 3,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const choice = r.choices[0];
    const content = choice?.logprobs?.content ?? [];
    expect(content).toHaveLength(4);
    expect(content.map((t) => t.token).join("")).toBe(choice?.message.content);
    for (const t of content) {
      expect(Object.keys(t).sort()).toEqual(["bytes", "logprob", "token", "top_logprobs"]);
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.top_logprobs).toHaveLength(3);
      const tops = t.top_logprobs.map((x) => x.logprob);
      expect([...tops].sort((x, y) => y - x)).toEqual(tops);
      // Greedy: the chosen token is the most likely one.
      expect(t.top_logprobs[0]).toEqual({ token: t.token, logprob: t.logprob, bytes: t.bytes });
    }
  });

  it("returns logprobs with beam search, streamed or not", async () => {
    const body = {
      model: MODEL,
      messages: [{ role: "user", content: "Count to three." }],
      max_tokens: 4,
      ignore_eos: true,
      use_beam_search: true,
      logprobs: true,
      top_logprobs: 2,
    };
    const r = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const content = r.choices[0]?.logprobs?.content ?? [];
    expect(content).toHaveLength(4);
    expect(content.map((t) => t.token).join("")).toBe(r.choices[0]?.message.content);
    for (const t of content) expect(t.top_logprobs).toHaveLength(2);
    const stream = await client.chat.completions.create({
      ...body,
      stream: true,
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    const streamed: OpenAI.ChatCompletionTokenLogprob[] = [];
    for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
    expect(streamed).toEqual(content);
  });

  it("applies logit_bias: +100 makes one token the whole answer", async () => {
    const tokenizer = await loadTokenizer(stack.modelDir);
    const [yes] = tokenizer.encodePlain("Yes");
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Is it?" }],
      max_tokens: 3,
      temperature: 0,
      ignore_eos: true,
      logit_bias: { [String(yes)]: 100 },
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(r.choices[0]?.message.content).toBe("YesYesYes");
  });

  it("answers n=2 with two choices and adds up their tokens", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Tell me a story." }],
      n: 2,
      max_tokens: 4,
      temperature: 1,
      seed: 7,
      ignore_eos: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(r.choices.map((c) => c.index)).toEqual([0, 1]);
    for (const c of r.choices) expect(c.finish_reason).toBe("length");
    expect(r.usage?.completion_tokens).toBe(8);
  });

  it("is reproducible with a seed at temperature 1", async () => {
    const ask = (seed: number) =>
      client.chat.completions.create({
        model: MODEL,
        messages: [{ role: "user", content: "Say something random." }],
        temperature: 1,
        seed,
        max_tokens: 8,
        ignore_eos: true,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const [a, b] = await Promise.all([ask(1234), ask(1234)]);
    const c = await ask(1235);
    expect(a.choices[0]?.message.content).toBe(b.choices[0]?.message.content);
    expect(a.choices[0]?.message.content).not.toBe(c.choices[0]?.message.content);
  });

  it("raises the client's BadRequestError naming the field", async () => {
    const bad = client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "x" }],
      top_p: 5,
    });
    await expect(bad).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(bad).rejects.toMatchObject({ status: 400, param: "top_p" });
    await expect(bad).rejects.toThrow(/top_p/);
  });

  it("matches the reference's greedy answer for iii_one_image_sliced", async () => {
    const meta = JSON.parse(readFileSync(join(GOLDEN, "tiny-a/iii_one_image_sliced/meta.json"), "utf8")) as Golden;
    const [image, question] = meta.msgs_content as [string, string];
    const r = await client.chat.completions.create({
      model: MODEL,
      // No system message: the chat template adds "You are a helpful assistant.", as the reference's does.
      messages: [userMessage({ image: [pngUrl(image)] }, question)],
      max_tokens: 16,
      // temperature 0 alone is plain greedy, as the reference ran it (chat(sampling=False, num_beams=1,
      // repetition_penalty=1.0)): the sampling preset's penalty 1.05 would turn step 3 (a repeated token) elsewhere.
      temperature: 0,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(r.usage?.prompt_tokens).toBe(meta.num_tokens);
    expect(r.usage?.completion_tokens).toBe(meta.greedy_tokens.length);
    const tokenizer = await loadTokenizer(stack.modelDir);
    // NOTE: compared exactly, untrimmed. The expected text is the byte-level decode of the reference's generated
    // ids (no special tokens among them); the edge returns the gpu-service's streamed detokenisation as it is,
    // so the answer's leading space (" bran...") must be there too. Trimming either side would hide a
    // detokeniser bug at the first token, where such bugs live.
    expect(r.choices[0]?.message.content).toBe(tokenizer.decode(meta.greedy_tokens, { skipSpecialTokens: true }));
  });

  it("previews a request's cost with /v1/chat/completions/render, without generating", async () => {
    const meta = JSON.parse(readFileSync(join(GOLDEN, "tiny-a/iii_one_image_sliced/meta.json"), "utf8")) as Golden & {
      final_prompt: string;
    };
    const [image, question] = meta.msgs_content as [string, string];
    const res = await fetch(`${stack.edgeUrl}/v1/chat/completions/render`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, messages: [userMessage({ image: [pngUrl(image)] }, question)] }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      prompt_tokens: meta.num_tokens,
      prompt_tokens_details: {
        image_tokens: IMAGE_640x480,
        text_tokens: meta.num_tokens - IMAGE_640x480,
        video_tokens: 0,
      },
      media: [
        {
          type: "image",
          source_size: [640, 480],
          grid: [2, 1],
          slices: 3,
          slice_sizes: [
            [518, 392],
            [364, 546],
            [364, 546],
          ],
          placeholder_tokens: 192,
        },
      ],
      prompt_text: meta.final_prompt,
    });
  });
});

/**
 * Prompt token counts. An image costs 64 query tokens per slice plus its markers: `<image_id>k</image_id>`
 * (3 tokens), `<image>...</image>` around the overview (2) and `<slice>...</slice>` around each tile (2).
 * Video frames have no image id.
 */
const IMAGE_640x480 = 3 + 2 + 64 + 2 * (2 + 64); // overview + 2x1 tiles
const IMAGE_097x131 = 3 + 2 + 64; // overview only
const VIDEO_MP4 = 2 * (2 + 64); // 160x120, 2 s at the default 1 fps -> 2 frames, overview only
const VIDEO_3_FRAMES = 3 * (2 + 64 + 2 * (2 + 64)); // 640x360 frames -> overview + 2 tiles each
const PROMPT = {
  // <|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n
  systemHello: 18,
  oneImage: 26 + IMAGE_640x480,
  twoImages: 24 + IMAGE_640x480 + IMAGE_097x131,
};
