/**
 * Issue 17 acceptance: constrained decoding and tool calling through the unmodified `openai` client against
 * the real stack (tiny-a, random weights: only the grammar can make an answer valid).
 *
 *   openai client ──> edge (response_format / guided_* / tools) ──> gpu-service: xgrammar bitmask per token
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv from "ajv";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import type { RunnableToolFunctionWithParse } from "openai/lib/RunnableFunction";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Stack, startStack, stopStackChecked } from "./helpers/stack";
import { makeMp4 } from "./web-chat-scenario";

const MODEL = "tiny-a";
const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8];
const GOLDEN = join(import.meta.dirname, "../../shared/golden");
const pngUrl = (name: string) =>
  `data:image/png;base64,${readFileSync(join(GOLDEN, "images", `${name}.png`)).toString("base64")}`;

const Receipt = z.object({
  merchant: z.string().max(12),
  total: z.number().int().min(0).max(99),
  currency: z.enum(["EUR", "USD", "GBP"]),
  paid: z.boolean(),
  items: z.array(z.object({ name: z.string().max(6), qty: z.number().int().min(1).max(9) })).max(3),
});

const WEATHER_PARAMS = {
  type: "object",
  properties: {
    city: { type: "string", maxLength: 10 },
    unit: { type: "string", enum: ["celsius", "fahrenheit"] },
    days: { type: "integer", minimum: 1, maximum: 7 },
  },
  required: ["city", "unit", "days"],
  additionalProperties: false,
};
const weatherTool: OpenAI.ChatCompletionFunctionTool = {
  type: "function",
  function: { name: "get_weather", description: "Forecast for a city", parameters: WEATHER_PARAMS },
};
const validWeather = new Ajv().compile(WEATHER_PARAMS);

describe("structured outputs and tools with the openai client against the real stack (tiny-a)", () => {
  let stack: Stack;
  let client: OpenAI;

  beforeAll(async () => {
    stack = await startStack({ gpuReplicas: 1 });
    client = new OpenAI({ baseURL: `${stack.edgeUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120_000 });
  });

  afterAll(async () => {
    await stopStackChecked(stack);
  });

  it("chat.completions.parse() with a zod schema gives a valid parsed object for every seed (n=2)", async () => {
    for (const seed of SEEDS) {
      const r = await client.chat.completions.parse({
        model: MODEL,
        messages: [{ role: "user", content: "Extract the receipt." }],
        response_format: zodResponseFormat(Receipt, "receipt"),
        temperature: 1,
        seed,
        n: 2,
        max_completion_tokens: 400,
      });
      expect(r.choices).toHaveLength(2);
      for (const c of r.choices) {
        expect(c.finish_reason).toBe("stop");
        expect(Receipt.parse(c.message.parsed)).toEqual(c.message.parsed);
      }
    }
  });

  it("regex, choice, EBNF and json_object hold for every seed, with an image, a video, logprobs and a stop string", async () => {
    const image = { type: "image_url" as const, image_url: { url: pngUrl("img_097x131") } };
    const video = `data:video/mp4;base64,${makeMp4(1).toString("base64")}`;
    for (const seed of SEEDS.slice(0, 5)) {
      const base = { model: MODEL, temperature: 1, seed, max_tokens: 120 };
      const re = await client.chat.completions.create({
        ...base,
        messages: [{ role: "user", content: [image, { type: "text", text: "Plate number?" }] }],
        guided_regex: "[A-Z]{2}-[0-9]{2,4}",
        logprobs: true,
        top_logprobs: 2,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(re.choices[0]?.message.content).toMatch(/^[A-Z]{2}-[0-9]{2,4}$/);
      expect(re.choices[0]?.logprobs?.content?.length).toBe(re.usage?.completion_tokens);
      const ch = await client.chat.completions.create({
        ...base,
        messages: [{ role: "user", content: "Sentiment?" }],
        structured_outputs: { choice: ["positive", "negative", "neutral"] },
        n: 3,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      for (const c of ch.choices) expect(["positive", "negative", "neutral"]).toContain(c.message.content);
      if (seed === SEEDS[0]) {
        const vid = await client.chat.completions.create({
          ...base,
          messages: [
            {
              role: "user",
              content: [
                { type: "video_url", video_url: { url: video } },
                { type: "text", text: "Indoors?" },
              ] as unknown as OpenAI.ChatCompletionContentPart[],
            },
          ],
          guided_choice: ["yes", "no"],
        } as OpenAI.ChatCompletionCreateParamsNonStreaming);
        expect(["yes", "no"]).toContain(vid.choices[0]?.message.content);
        const details = vid.usage?.prompt_tokens_details as { video_tokens?: number } | undefined;
        expect(details?.video_tokens).toBeGreaterThan(0);
      }
      const g = await client.completions.create({
        ...base,
        prompt: "Sum:",
        guided_grammar: 'root ::= "(" [1-9] ("+" [1-9]){0,3} ")"',
      } as OpenAI.CompletionCreateParamsNonStreaming);
      expect(g.choices[0]?.text).toMatch(/^\([1-9](\+[1-9]){0,3}\)$/);
      const stop = await client.chat.completions.create({
        ...base,
        messages: [{ role: "user", content: "Code?" }],
        guided_regex: "ab(c|d)x[0-9]{3}",
        stop: ["x"],
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(stop.choices[0]?.message.content).toMatch(/^ab[cd]$/);
      const obj = await client.chat.completions.create({
        ...base,
        messages: [{ role: "user", content: "JSON please" }],
        response_format: { type: "json_object" },
        stream: true,
      });
      let text = "";
      let finish: string | null = null;
      for await (const chunk of obj) {
        text += chunk.choices[0]?.delta.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      // A free-form object can outgrow max_tokens; when it ends on its own it is a JSON object.
      if (finish === "stop") expect(typeof JSON.parse(text)).toBe("object");
    }
  });

  it("a schema that cannot compile is a 400 naming response_format.json_schema.schema", async () => {
    const err = await client.chat.completions
      .create({
        model: MODEL,
        messages: [{ role: "user", content: "x" }],
        response_format: {
          type: "json_schema",
          json_schema: { name: "bad", schema: { type: "object", properties: { a: { $ref: "#/$defs/missing" } } } },
        },
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    const e = err as InstanceType<typeof OpenAI.BadRequestError>;
    expect(e.param).toBe("response_format.json_schema.schema");
    expect(e.message).toMatch(/cannot compile: .*missing/);
  });

  it("tool_choice required and named force valid tool calls, streamed or not", async () => {
    for (const seed of SEEDS.slice(0, 4)) {
      const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Weather in Paris?" }];
      const r = await client.chat.completions.create({
        model: MODEL,
        messages,
        tools: [weatherTool],
        tool_choice: "required",
        parallel_tool_calls: false,
        temperature: 1,
        seed,
        max_tokens: 400,
      });
      const c = r.choices[0];
      expect(c?.finish_reason).toBe("tool_calls");
      expect(c?.message.tool_calls?.length).toBeGreaterThan(0);
      for (const call of c?.message.tool_calls ?? []) {
        expect(call.id).toMatch(/^call_/);
        if (call.type !== "function") throw new Error("expected a function call");
        expect(call.function.name).toBe("get_weather");
        expect(validWeather(JSON.parse(call.function.arguments))).toBe(true);
      }
      // The SDK's streaming helper assembles delta.tool_calls into the same shape.
      const stream = client.chat.completions.stream({
        model: MODEL,
        messages,
        tools: [weatherTool],
        tool_choice: { type: "function", function: { name: "get_weather" } },
        temperature: 1,
        seed,
        max_tokens: 400,
      });
      const done = await stream.finalChatCompletion();
      const sc = done.choices[0];
      expect(sc?.finish_reason).toBe("tool_calls");
      expect(sc?.message.tool_calls).toHaveLength(1);
      const call = sc?.message.tool_calls?.[0];
      if (call?.type !== "function") throw new Error("expected a function call");
      expect(validWeather(JSON.parse(call.function.arguments))).toBe(true);
    }
  });

  it("runTools() calls the function with parsed arguments and sends the result back (plain and streaming)", async () => {
    for (const stream of [false, true]) {
      const seen: unknown[] = [];
      const tool: RunnableToolFunctionWithParse<Record<string, unknown>> = {
        type: "function",
        function: {
          name: "get_weather",
          description: "Forecast for a city",
          parameters: WEATHER_PARAMS,
          parse: (s: string) => JSON.parse(s) as Record<string, unknown>,
          function: (args: Record<string, unknown>) => {
            seen.push(args);
            return { temperature: 21 };
          },
        },
      };
      const params = {
        model: MODEL,
        messages: [{ role: "user" as const, content: "Weather in Rome?" }],
        tools: [tool],
        tool_choice: { type: "function" as const, function: { name: "get_weather" } },
        temperature: 1,
        seed: 3,
        max_tokens: 200,
      };
      const runner = stream
        ? client.chat.completions.runTools({ ...params, stream: true })
        : client.chat.completions.runTools(params);
      await runner.done();
      expect(seen).toHaveLength(1);
      expect(validWeather(seen[0])).toBe(true);
      const msgs = runner.messages;
      expect(msgs.map((m) => m.role)).toEqual(["user", "assistant", "tool"]);
      // The conversation with the assistant's tool call and the tool's result is accepted for the next turn.
      const next = await client.chat.completions.create({
        model: MODEL,
        messages: msgs,
        tools: [weatherTool],
        tool_choice: "auto",
        max_tokens: 8,
        temperature: 0,
      });
      expect(next.choices[0]?.message.role).toBe("assistant");
    }
  });
});
