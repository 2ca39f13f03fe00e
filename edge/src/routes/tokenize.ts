/**
 * POST /tokenize and POST /detokenize, as vLLM serves them: a prompt (raw text, or chat messages with their
 * media rendered through the chat template) -> its token ids, and token ids -> text. Both run Prepare only.
 *
 *   /tokenize   {prompt} | {messages, ...chat fields} ─> Prepare ─> {count, max_model_len, tokens}
 *   /detokenize {tokens}                              ─> Prepare(prompt_token_ids) ─> {prompt}
 */
import type { Context, Hono } from "hono";
import { z } from "zod";
import type { AppContext, EdgeEnv } from "../app";
import type { PreparedPrompt } from "../backends/types";
import { bad, planChat } from "../chat-request";
import { rawPromptError } from "../completion-request";
import { setRequestModel } from "../observe";
import { chatRequestSchema, tokenId } from "../schemas";
import { checkModel, prepareOnly, promptTokens, readRequest, schemaCache } from "./generation";

type C = Context<EdgeEnv>;

const textSchema = z.object({
  model: z.string().nullish(),
  prompt: z.string().min(1),
  // Qwen2 adds no BOS/EOS, so add_special_tokens changes nothing; accepted for vLLM clients.
  add_special_tokens: z.boolean().nullish(),
  return_token_strs: z.boolean().nullish(),
});

const detokenizeSchema = z.object({
  model: z.string().nullish(),
  tokens: z.array(tokenId()).min(1),
});

const chatSchemaFor = schemaCache((limits) =>
  chatRequestSchema(limits).extend({ return_token_strs: z.boolean().nullish() }),
);

/** Prepare of a raw text or token-id prompt (no template, no media); errors name the client's `field`. */
function prepareRaw(
  c: C,
  ctx: AppContext,
  prompt: { rawPrompt: string } | { promptTokenIds: number[] },
  field: "tokens" | "prompt",
): Promise<PreparedPrompt> {
  return prepareOnly(c, ctx, { messages: [], options: {}, addGenerationPrompt: false, ...prompt }).catch(
    (err: unknown) => {
      throw rawPromptError(err, field);
    },
  );
}

function tokenizeBody(c: C, ctx: AppContext, model: string, prompt: PreparedPrompt) {
  return c.json({
    model,
    count: promptTokens(prompt),
    max_model_len: ctx.pool.modelInfo()?.contextLength ?? null,
    tokens: prompt.tokenIds,
    token_strs: null,
  });
}

async function tokenize(c: C, ctx: AppContext): Promise<Response> {
  const raw: unknown = await c.req.raw
    .clone()
    .json()
    .catch(() => undefined);
  const isChat = typeof raw === "object" && raw !== null && "messages" in raw;
  if (isChat) {
    const { req, plan } = await readRequest(c, ctx, chatSchemaFor(ctx.config.maxN), (r) => {
      if (r.return_token_strs) throw bad("return_token_strs", "return_token_strs is not supported");
      return planChat(r, {
        maxImagesPerRequest: ctx.config.maxImagesPerRequest,
        maxVideosPerRequest: ctx.config.maxVideosPerRequest,
      });
    });
    const model = await checkModel(req.model, ctx);
    setRequestModel(model);
    const prompt = await prepareOnly(c, ctx, {
      messages: plan.messages,
      options: plan.options,
      addGenerationPrompt: plan.addGenerationPrompt,
    });
    return tokenizeBody(c, ctx, model, prompt);
  }
  const { req } = await readRequest(c, ctx, textSchema, (r) => {
    if (r.return_token_strs) throw bad("return_token_strs", "return_token_strs is not supported");
    return r;
  });
  const model = await checkModel(req.model, ctx);
  setRequestModel(model);
  return tokenizeBody(c, ctx, model, await prepareRaw(c, ctx, { rawPrompt: req.prompt }, "prompt"));
}

async function detokenize(c: C, ctx: AppContext): Promise<Response> {
  const { req } = await readRequest(c, ctx, detokenizeSchema, (r) => r);
  const model = await checkModel(req.model, ctx);
  setRequestModel(model);
  const prompt = await prepareRaw(c, ctx, { promptTokenIds: req.tokens }, "tokens");
  return c.json({ model, prompt: prompt.promptText });
}

/** Registers POST /tokenize and POST /detokenize (vLLM's paths; guarded by the API key like /v1). */
export function registerTokenizeRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  app.post("/tokenize", (c) => tokenize(c, ctx));
  app.post("/detokenize", (c) => detokenize(c, ctx));
}
