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
import { streamSSE } from "hono/streaming";
import type { AppContext, EdgeEnv } from "../app";
import type { GenerateEvent, PreparedPrompt } from "../backends/types";
import { type ChatPlan, planChat } from "../chat-request";
import { ChunkBuilder, CompletionCollector, logprobJson, stopReasonJson, usageJson } from "../chat-response";
import { EdgeError, httpError } from "../errors";
import { setRequestModel } from "../observe";
import { type ChatRequest, chatRequestSchema, validationError } from "../schemas";

type C = Context<EdgeEnv>;

// Building a zod schema costs far more than using one: one per MAX_N value.
const schemas = new Map<number, ReturnType<typeof chatRequestSchema>>();
function schemaFor(maxN: number): ReturnType<typeof chatRequestSchema> {
  let s = schemas.get(maxN);
  if (!s) {
    s = chatRequestSchema({ maxN });
    schemas.set(maxN, s);
  }
  return s;
}

async function readRequest(c: C, ctx: AppContext): Promise<{ req: ChatRequest; plan: ChatPlan }> {
  let raw: unknown;
  try {
    raw = await c.req.json();
  } catch (err) {
    if (err instanceof EdgeError) throw err; // the body limit
    ctx.metrics.reject("validation");
    throw new EdgeError("invalid_request", "request body is not valid JSON", { param: "body", reason: "validation" });
  }
  const parsed = schemaFor(ctx.config.maxN).safeParse(raw);
  if (!parsed.success) {
    ctx.metrics.reject("validation");
    throw validationError(parsed.error);
  }
  try {
    return {
      req: parsed.data,
      plan: planChat(parsed.data, {
        maxImagesPerRequest: ctx.config.maxImagesPerRequest,
        maxVideosPerRequest: ctx.config.maxVideosPerRequest,
      }),
    };
  } catch (err) {
    ctx.metrics.reject("validation");
    throw err;
  }
}

async function checkModel(req: ChatRequest, ctx: AppContext): Promise<string> {
  const served = await ctx.modelName();
  if (req.model && req.model !== served) {
    throw new EdgeError("not_found", `The model \`${req.model}\` does not exist (this server serves \`${served}\`).`, {
      param: "model",
    });
  }
  return served;
}

/** One request's cancellation: the client going away, the deadline, or the edge shutting down. */
function requestSignal(c: C, ctx: AppContext): { ac: AbortController; dispose: () => void } {
  const ac = new AbortController();
  const abort = () => ac.abort();
  const sources = [c.req.raw.signal, ctx.shutdownSignal].filter((s) => s !== undefined);
  for (const s of sources) {
    if (s.aborted) abort();
    else s.addEventListener("abort", abort, { once: true });
  }
  // NOTE: the shutdown signal lives as long as the process; its listeners must go when the request ends.
  const dispose = () => {
    for (const s of sources) s.removeEventListener("abort", abort);
  };
  return { ac, dispose };
}

function contextCheck(prompt: PreparedPrompt, plan: ChatPlan, contextLength: number | undefined): void {
  if (!contextLength) return;
  const p = prompt.tokenCounts.total || prompt.tokenIds.length;
  if (p >= contextLength) {
    throw new EdgeError(
      "context_too_long",
      `This model's maximum context length is ${contextLength} tokens. However, your messages resulted in ${p} tokens. Please reduce the length of the messages.`,
      { param: "messages", reason: "context_too_long" },
    );
  }
  if (plan.maxTokens !== undefined && p + plan.maxTokens > contextLength) {
    throw new EdgeError(
      "context_too_long",
      `This model's maximum context length is ${contextLength} tokens. However, you requested ${p + plan.maxTokens} tokens (${p} in the messages, ${plan.maxTokens} in the completion). Please reduce the length of the messages or completion.`,
      { param: "max_tokens", reason: "context_too_long" },
    );
  }
}

function completionId(): string {
  return `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
}

async function render(c: C, ctx: AppContext): Promise<Response> {
  const { req, plan } = await readRequest(c, ctx);
  const model = await checkModel(req, ctx);
  setRequestModel(model);
  const { ac, dispose } = requestSignal(c, ctx);
  const info = ctx.pool.modelInfo();
  const prompt = await ctx.preprocess
    .prepare(
      {
        requestId: c.get("requestId"),
        messages: plan.messages,
        options: { ...plan.options, maxPromptTokens: info?.contextLength ? info.contextLength - 1 : 0 },
        addGenerationPrompt: plan.addGenerationPrompt,
      },
      {
        signal: ac.signal,
        deadline: new Date(Date.now() + ctx.config.requestTimeoutMs),
        requestId: c.get("requestId"),
      },
    )
    .finally(dispose);
  const queryNum = info?.queryNum || 64;
  const t = prompt.tokenCounts;
  const ctxLen = info?.contextLength ?? null;
  return c.json({
    object: "chat.completion.render",
    model,
    prompt_tokens: t.total || prompt.tokenIds.length,
    prompt_tokens_details: { text_tokens: t.text, image_tokens: t.image, video_tokens: t.video },
    max_model_len: ctxLen,
    max_completion_tokens: ctxLen === null ? null : Math.max(0, ctxLen - (t.total || prompt.tokenIds.length)),
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

/** Records the usage of a finished request: metrics and the caller's token bucket. */
function account(c: C, ctx: AppContext, ev: Extract<GenerateEvent, { type: "final" }>): void {
  const u = ev.usage;
  ctx.limiter.charge(c.get("caller"), u.promptTokens + u.completionTokens);
  ctx.metrics.generatedTokens.add(u.completionTokens);
  const m = u.promptTokensByModality;
  ctx.metrics.promptTokens.add(m.text, { modality: "text" });
  ctx.metrics.promptTokens.add(m.image, { modality: "image" });
  ctx.metrics.promptTokens.add(m.video, { modality: "video" });
}

async function complete(c: C, ctx: AppContext): Promise<Response> {
  const start = performance.now();
  const { req, plan } = await readRequest(c, ctx);
  const model = await checkModel(req, ctx);
  setRequestModel(model);
  if (ctx.inflight.count >= ctx.config.maxConcurrentRequests) {
    ctx.metrics.reject("concurrency");
    throw new EdgeError(
      "overloaded",
      `the server is at its limit of ${ctx.config.maxConcurrentRequests} concurrent requests; retry later`,
      { retryAfterS: 1, reason: "concurrency" },
    );
  }
  ctx.inflight.count++;
  ctx.metrics.inFlight.add(1);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    ctx.inflight.count--;
    ctx.metrics.inFlight.add(-1);
    dispose();
  };
  const { ac, dispose } = requestSignal(c, ctx);
  const rid = c.get("requestId");
  const opts = { signal: ac.signal, deadline: new Date(Date.now() + ctx.config.requestTimeoutMs), requestId: rid };
  let events: AsyncGenerator<GenerateEvent> | undefined;
  let handedOff = false;
  try {
    const info = ctx.pool.modelInfo();
    const prompt = await ctx.preprocess.prepare(
      {
        requestId: rid,
        messages: plan.messages,
        options: { ...plan.options, maxPromptTokens: info?.contextLength ? info.contextLength - 1 : 0 },
        addGenerationPrompt: plan.addGenerationPrompt,
      },
      opts,
    );
    contextCheck(prompt, plan, info?.contextLength);
    if (ac.signal.aborted) throw new EdgeError("cancelled", "the client went away");
    events = ctx.pool.generate({ requestId: rid, prompt, params: plan.params, priority: plan.priority }, opts);
    // The first event decides the HTTP status: errors before it are plain HTTP errors.
    const first = await events.next();
    const id = completionId();
    const created = Math.floor(Date.now() / 1000);
    if (!first.done && first.value.type === "token") ctx.metrics.ttft.record((performance.now() - start) / 1000);

    if (!plan.stream) {
      const col = new CompletionCollector(plan.params.n, {
        logprobs: plan.params.logprobs,
        topLogprobs: plan.params.topLogprobs,
        stop: plan.params.stop,
      });
      if (!first.done) col.add(first.value);
      for (let r = await events.next(); !r.done; r = await events.next()) col.add(r.value);
      const body = col.body(id, created, model);
      const finalEv =
        col.usage && col.timings ? ({ type: "final", usage: col.usage, timings: col.timings } as const) : undefined;
      if (finalEv) account(c, ctx, finalEv);
      const headers: Record<string, string> = {
        "x-prompt-tokens": String(body.usage.prompt_tokens),
        "x-generated-tokens": String(body.usage.completion_tokens),
      };
      if (col.timings) {
        headers["x-queue-time-ms"] = col.timings.queueMs.toFixed(1);
        headers["x-vision-encode-time-ms"] = col.timings.visionEncodeMs.toFixed(1);
        headers["x-prefill-time-ms"] = col.timings.prefillMs.toFixed(1);
        headers["x-decode-time-ms"] = col.timings.decodeMs.toFixed(1);
      }
      return c.json(body, 200, headers);
    }

    handedOff = true;
    const gen = events;
    return streamSSE(c, async (sse) => {
      sse.onAbort(() => ac.abort());
      const chunks = new ChunkBuilder(id, created, model, plan.includeUsage);
      const promptTokens = prompt.tokenCounts.total || prompt.tokenIds.length;
      let completion = 0;
      const running = () =>
        plan.continuousUsage && plan.includeUsage
          ? {
              ...usageJson({
                promptTokens,
                promptTokensByModality: prompt.tokenCounts,
                cachedPromptTokens: 0,
                completionTokens: completion,
              }),
            }
          : undefined;
      const send = (obj: unknown) => sse.writeSSE({ data: JSON.stringify(obj) });
      try {
        for (let i = 0; i < plan.params.n; i++) await send(chunks.role(i, running()));
        let r = first;
        while (!r.done && !sse.aborted) {
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
            account(c, ctx, ev);
            if (plan.includeUsage) await send(chunks.usage(usageJson(ev.usage)));
          }
          r = await gen.next();
        }
      } catch (err) {
        // The status is already 200: report the failure as a last event with the same body as an HTTP error.
        if (!sse.aborted) {
          const e = httpError(err);
          ctx.logger?.warn({ request_id: rid, err: e.body.error.message }, "stream failed after it started");
          await send(e.body);
        }
      } finally {
        if (!sse.aborted) await sse.writeSSE({ data: "[DONE]" });
        ac.abort();
        await gen.return(undefined);
        release();
      }
    });
  } finally {
    if (!handedOff) {
      ac.abort();
      await events?.return(undefined);
      release();
    }
  }
}

/** Registers the chat routes. */
export function registerChatRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  app.post("/v1/chat/completions", (c) => complete(c, ctx));
  app.post("/v1/chat/completions/render", (c) => render(c, ctx));
}
