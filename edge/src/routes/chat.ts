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
import { renameStructuredError } from "../structured-request";
import { parseToolCalls, type ToolCallOut, ToolCallStream } from "../tools";
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
      const { events, first } = await scope
        .generate({ prompt, params: plan.params, priority: plan.priority })
        .catch((err: unknown) => {
          throw renameStructuredError(err, plan.structured?.param);
        });
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
        if (plan.tools) {
          for (const ch of body.choices) {
            const { content, calls } = parseToolCalls(ch.message.content ?? "");
            if (calls.length === 0) continue;
            Object.assign(ch.message, { content, tool_calls: calls });
            if (ch.finish_reason === "stop") ch.finish_reason = "tool_calls";
          }
        }
        if (col.usage && col.timings) account(c, ctx, col.usage);
        return c.json(body, 200, usageHeaders(body.usage, col.timings));
      }

      return scope.stream(async (send, aborted) => {
        const chunks = new ChunkBuilder(id, created, model, plan.includeUsage);
        // A call goes out as the OpenAI SDK assembles it: id, type and name first, then the arguments.
        const sendCall = async (index: number, k: number, call: ToolCallOut) => {
          await send(
            chunks.toolCall(index, {
              index: k,
              id: call.id,
              type: "function",
              function: { name: call.function.name, arguments: "" },
            }),
          );
          await send(chunks.toolCall(index, { index: k, function: { arguments: call.function.arguments } }));
        };
        let completion = 0;
        const running = () =>
          plan.continuousUsage && plan.includeUsage ? runningUsageJson([prompt], completion) : undefined;
        for (let i = 0; i < plan.params.n; i++) await send(chunks.role(i, running()));
        // With tools, each choice's text goes through a parser that holds back <tool_call> blocks.
        const toolStreams = plan.tools ? Array.from({ length: plan.params.n }, () => new ToolCallStream()) : undefined;
        for (let r = first; !r.done && !aborted(); r = await events.next()) {
          const ev = r.value;
          if (ev.type === "token") {
            completion += ev.tokenIds.length;
            ctx.metrics.streamedTokens.add(ev.tokenIds.length);
            const lp = plan.params.logprobs ? ev.logprobs.map((l) => logprobJson(l, plan.params.topLogprobs)) : null;
            const ts = toolStreams?.[ev.index];
            if (!ts) {
              if (ev.text !== "" || (lp && lp.length > 0)) await send(chunks.delta(ev.index, ev.text, lp, running()));
              continue;
            }
            const out = ts.push(ev.text);
            if (out.content !== "" || (lp && lp.length > 0))
              await send(chunks.delta(ev.index, out.content, lp, running()));
            const base = ts.calls - out.calls.length;
            for (const [j, call] of out.calls.entries()) await sendCall(ev.index, base + j, call);
          } else if (ev.type === "choice_end") {
            const ts = toolStreams?.[ev.index];
            const rest = ts?.flush() ?? "";
            if (rest !== "") await send(chunks.delta(ev.index, rest, null, running()));
            const reason = ts && ts.calls > 0 && ev.finishReason === "stop" ? "tool_calls" : ev.finishReason;
            await send(chunks.finish(ev.index, reason, stopReasonJson(ev.stopReason, plan.params.stop), running()));
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
