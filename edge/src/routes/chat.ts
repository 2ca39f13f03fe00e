/**
 * POST /v1/chat/completions (JSON or SSE) and POST /v1/chat/completions/render (token count and layout,
 * no generation).
 *
 * Trace of one request: validate (zod) -> planChat -> concurrency slot -> Prepare on the preprocess
 * service -> context-length check -> GpuPool.generate, whose first event is awaited before the response
 * starts (so a backend that refuses the request yields a real 429/503, not a 200 stream) -> JSON body, or
 * SSE chunks, an error event if the stream breaks, and `data: [DONE]`.
 */
import type { Context, Hono } from "hono";
import type { AppContext, EdgeEnv } from "../app";
import { planChat } from "../chat-request";
import {
  ChunkBuilder,
  CompletionCollector,
  logprobJson,
  runningUsageJson,
  stopReasonJson,
  usageJson,
} from "../chat-response";
import { setRequestModel } from "../observe";
import { chatRequestSchema } from "../schemas";
import {
  account,
  checkModel,
  checkSequences,
  contextCheck,
  prepareOnly,
  promptTokens,
  readRequest,
  runGeneration,
  schemaCache,
  usageHeaders,
} from "./generation";

type C = Context<EdgeEnv>;

const schemaFor = schemaCache(chatRequestSchema);

function readChat(c: C, ctx: AppContext) {
  return readRequest(c, ctx, schemaFor(ctx.config.maxN), (req) =>
    planChat(req, {
      maxImagesPerRequest: ctx.config.maxImagesPerRequest,
      maxVideosPerRequest: ctx.config.maxVideosPerRequest,
    }),
  );
}

function completionId(): string {
  return `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
}

async function render(c: C, ctx: AppContext): Promise<Response> {
  const { req, plan } = await readChat(c, ctx);
  const model = await checkModel(req.model, ctx);
  setRequestModel(model);
  const info = ctx.pool.modelInfo();
  const prompt = await prepareOnly(c, ctx, {
    messages: plan.messages,
    options: plan.options,
    addGenerationPrompt: plan.addGenerationPrompt,
  });
  const queryNum = info?.queryNum || 64;
  const t = prompt.tokenCounts;
  const ctxLen = info?.contextLength ?? null;
  return c.json({
    object: "chat.completion.render",
    model,
    prompt_tokens: promptTokens(prompt),
    prompt_tokens_details: { text_tokens: t.text, image_tokens: t.image, video_tokens: t.video },
    max_model_len: ctxLen,
    max_completion_tokens: ctxLen === null ? null : Math.max(0, ctxLen - promptTokens(prompt)),
    media: prompt.media.map((m, index) => ({
      index,
      type: m.modality === "video" ? "video_frame" : "image",
      source_size: [m.sourceWidth, m.sourceHeight],
      grid: m.gridCols > 0 ? [m.gridCols, m.gridRows] : null,
      slices: m.slices.length,
      slice_sizes: m.slices.map((s) => [s.width, s.height]),
      placeholder_tokens: m.slices.length * queryNum,
    })),
    prompt_text: prompt.promptText,
  });
}

async function complete(c: C, ctx: AppContext): Promise<Response> {
  const start = performance.now();
  const { req, plan } = await readChat(c, ctx);
  const model = await checkModel(req.model, ctx);
  setRequestModel(model);
  const p = plan.params;
  const sequences = checkSequences(
    ctx,
    Math.max(p.n, p.beamWidth),
    p.beamWidth > p.n ? "best_of" : "n",
    p.beamWidth > 1 ? `beam width ${p.beamWidth}` : `n=${p.n}`,
  );
  return runGeneration(
    c,
    ctx,
    start,
    async (scope) => {
      const prompt = await scope.prepare({
        messages: plan.messages,
        options: plan.options,
        addGenerationPrompt: plan.addGenerationPrompt,
      });
      contextCheck(promptTokens(prompt), plan.maxTokens, ctx.pool.modelInfo()?.contextLength, "messages");
      const { events, first } = await scope.generate({ prompt, params: plan.params, priority: plan.priority });
      const id = completionId();
      const created = Math.floor(Date.now() / 1000);

      if (!plan.stream) {
        const col = new CompletionCollector(plan.params.n, {
          logprobs: plan.params.logprobs,
          topLogprobs: plan.params.topLogprobs,
          stop: plan.params.stop,
        });
        if (!first.done) col.add(first.value);
        for (let r = await events.next(); !r.done; r = await events.next()) col.add(r.value);
        const body = col.body(id, created, model);
        if (col.usage && col.timings) account(c, ctx, col.usage);
        return c.json(body, 200, usageHeaders(body.usage, col.timings));
      }

      return scope.stream(async (send, aborted) => {
        const chunks = new ChunkBuilder(id, created, model, plan.includeUsage);
        let completion = 0;
        const running = () =>
          plan.continuousUsage && plan.includeUsage ? runningUsageJson([prompt], completion) : undefined;
        for (let i = 0; i < plan.params.n; i++) await send(chunks.role(i, running()));
        for (let r = first; !r.done && !aborted(); r = await events.next()) {
          const ev = r.value;
          if (ev.type === "token") {
            completion += ev.tokenIds.length;
            ctx.metrics.streamedTokens.add(ev.tokenIds.length);
            const lp = plan.params.logprobs ? ev.logprobs.map((l) => logprobJson(l, plan.params.topLogprobs)) : null;
            if (ev.text !== "" || (lp && lp.length > 0)) await send(chunks.delta(ev.index, ev.text, lp, running()));
          } else if (ev.type === "choice_end") {
            await send(
              chunks.finish(ev.index, ev.finishReason, stopReasonJson(ev.stopReason, plan.params.stop), running()),
            );
          } else {
            account(c, ctx, ev.usage);
            if (plan.includeUsage) await send(chunks.usage(usageJson(ev.usage)));
          }
        }
      });
    },
    sequences,
  );
}

/** Registers the chat routes. */
export function registerChatRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  app.post("/v1/chat/completions", (c) => complete(c, ctx));
  app.post("/v1/chat/completions/render", (c) => render(c, ctx));
}
