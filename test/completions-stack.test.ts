/**
 * Legacy completions (POST /v1/completions) with the official `openai` npm client, unmodified, against the
 * real stack (preprocess + one gpu-service + edge as child processes on loopback, checkpoint tiny-a).
 *
 *   client.completions.create ──HTTP/SSE──> edge ──gRPC──> preprocess (raw_prompt | prompt_token_ids -> ids)
 *                                                └─gRPC──> gpu-service (tiny-a on ONNX Runtime CPU)
 *
 * The golden case `i_text_only` gives the exact expectations: its rendered chat prompt, sent as a raw prompt
 * (special-token strings are special tokens), must tokenise to the reference's 27 input ids and generate the
 * reference's 16 greedy tokens (16 is also the completions default for max_tokens).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadTokenizer, type Tokenizer } from "@minicpmv/preprocess/tokenizer";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, stopStackChecked } from "./helpers/stack";

const GOLDEN = join(import.meta.dirname, "../../shared/golden");
const MODEL = "tiny-a";

interface Golden {
  final_prompt: string;
  input_ids: number[];
  num_tokens: number;
  greedy_tokens: number[];
  top5_last: { ids: number[] };
}

const meta = JSON.parse(readFileSync(join(GOLDEN, "tiny-a/i_text_only/meta.json"), "utf8")) as Golden;
// temperature 0 alone is plain greedy (repetition penalty 1.0), as the reference ran it.
const GREEDY = { temperature: 0 };

describe("legacy completions with the openai client against the real stack (tiny-a)", () => {
  let stack: Stack;
  let client: OpenAI;
  let tokenizer: Tokenizer;
  let expected: string;

  beforeAll(async () => {
    stack = await startStack({ gpuReplicas: 1 });
    client = new OpenAI({ baseURL: `${stack.edgeUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 90_000 });
    tokenizer = await loadTokenizer(stack.modelDir);
    expected = tokenizer.decode(meta.greedy_tokens, { skipSpecialTokens: true });
  });

  afterAll(async () => {
    await stopStackChecked(stack);
  });

  it("answers a raw text prompt with the reference's greedy tokens, 16 by default", async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: meta.final_prompt,
      ...GREEDY,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(r.object).toBe("text_completion");
    expect(r.id).toMatch(/^cmpl-[0-9a-f]{32}$/);
    expect(r.model).toBe(MODEL);
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]).toMatchObject({ index: 0, text: expected, logprobs: null, finish_reason: "length" });
    expect(r.usage).toMatchObject({
      prompt_tokens: meta.num_tokens,
      completion_tokens: meta.greedy_tokens.length,
      total_tokens: meta.num_tokens + meta.greedy_tokens.length,
    });
  });

  it("streams the same answer with include_usage", async () => {
    const stream = await client.completions.create({
      model: MODEL,
      prompt: meta.final_prompt,
      stream: true,
      stream_options: { include_usage: true },
      ...GREEDY,
    } as OpenAI.CompletionCreateParamsStreaming);
    let text = "";
    let finish: string | null = null;
    const usages: OpenAI.CompletionUsage[] = [];
    for await (const ch of stream) {
      expect(ch.object).toBe("text_completion");
      for (const c of ch.choices) {
        expect(c.index).toBe(0);
        text += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
      if (ch.usage) usages.push(ch.usage);
    }
    expect(text).toBe(expected);
    expect(finish).toBe("length");
    expect(usages).toHaveLength(1);
    expect(usages[0]).toMatchObject({ prompt_tokens: meta.num_tokens, completion_tokens: meta.greedy_tokens.length });
  });

  it("answers the prompt given as token ids exactly as the text", async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: meta.input_ids,
      ...GREEDY,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(r.choices[0]?.text).toBe(expected);
    expect(r.usage?.prompt_tokens).toBe(meta.num_tokens);
  });

  it("batches two prompts with n=2 into four choices indexed promptIndex*n + j", async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: [meta.final_prompt, "Hello"],
      n: 2,
      max_tokens: 2,
      ignore_eos: true,
      ...GREEDY,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(r.choices.map((c) => [c.index, c.finish_reason])).toEqual([
      [0, "length"],
      [1, "length"],
      [2, "length"],
      [3, "length"],
    ]);
    expect(r.usage).toMatchObject({
      prompt_tokens: meta.num_tokens + tokenizer.encode("Hello").length,
      completion_tokens: 8,
    });
  });

  it("returns logprobs=2 in the legacy shape", async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: meta.input_ids,
      max_tokens: 3,
      logprobs: 2,
      ...GREEDY,
    } as OpenAI.CompletionCreateParamsNonStreaming);
    const lp = r.choices[0]?.logprobs;
    const tokens = meta.greedy_tokens.slice(0, 3).map((id) => tokenizer.tokenText(id));
    expect(lp?.tokens).toEqual(tokens);
    expect(lp?.token_logprobs).toHaveLength(3);
    for (const x of lp?.token_logprobs ?? []) expect(x).toBeLessThan(0);
    expect(lp?.text_offset).toEqual([0, tokens[0]?.length, (tokens[0]?.length ?? 0) + (tokens[1]?.length ?? 0)]);
    expect(lp?.top_logprobs).toHaveLength(3);
    // Greedy: the chosen token is the most likely one, so each position lists exactly the top 2.
    for (const top of lp?.top_logprobs ?? []) expect(Object.keys(top)).toHaveLength(2);
    const [first, second] = meta.top5_last.ids.map((id) => tokenizer.tokenText(id));
    expect(Object.keys(lp?.top_logprobs?.[0] ?? {}).sort()).toEqual([first, second].sort());
  });

  it("tokenizes and detokenizes like vLLM's /tokenize and /detokenize", async () => {
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${stack.edgeUrl}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as Record<string, unknown>;
    };
    const raw = await post("/tokenize", { model: MODEL, prompt: meta.final_prompt });
    expect(raw).toMatchObject({ count: meta.num_tokens, tokens: meta.input_ids, max_model_len: 32768 });
    // The same conversation as chat messages renders to the same ids.
    const question = meta.final_prompt.split("<|im_start|>user\n")[1]?.split("<|im_end|>")[0] as string;
    const chat = await post("/tokenize", { messages: [{ role: "user", content: question }] });
    expect(chat.tokens).toEqual(meta.input_ids);
    expect(await post("/detokenize", { tokens: meta.input_ids })).toEqual({ model: MODEL, prompt: meta.final_prompt });
  });

  it("raises the client's BadRequestError naming the field", async () => {
    const both = client.completions.create({ model: MODEL, prompt: "x", echo: true, logprobs: 1 });
    await expect(both).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(both).rejects.toMatchObject({ status: 400, param: "echo" });
    const outside = client.completions.create({ model: MODEL, prompt: [1, 10_000_000] });
    await expect(outside).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(outside).rejects.toMatchObject({ status: 400, param: "prompt[1]" });
    await expect(outside).rejects.toThrow(/prompt\[1\]: 10000000 is outside the vocabulary \(0\.\.\d+\)/);
  });
});
