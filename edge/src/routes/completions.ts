/**
 * POST /v1/completions: OpenAI's legacy completions (text in, text out, no chat template), JSON or SSE.
 *
 * Trace of one request: validate (zod) -> planCompletion -> concurrency slot -> per prompt of the batch, at
 * once: Prepare (raw text or token ids) -> context-length check -> GpuPool.generate, first event awaited
 * (so a refusal is a real HTTP error) -> the streams merged: JSON body with P*n choices, or SSE chunks
 * (echo first), an error event if a stream breaks, a usage chunk when asked, and `data: [DONE]`.
 */
import type { Context, Hono } from "hono";
import type { AppContext, EdgeEnv } from "../app";
import type { GenerateEvent, PreparedPrompt } from "../backends/types";
import { runningUsageJson, stopReasonJson, usageJson } from "../chat-response";
import { type CompletionPlan, completionPrepareInput, planCompletion, promptError } from "../completion-request";
import { addUsage, TextChunkBuilder, TextCompletionCollector } from "../completion-response";
import { setRequestModel } from "../observe";
import { completionRequestSchema } from "../schemas";
import { renameStructuredError } from "../structured-request";
import {
  account,
  checkModel,
  checkSequences,
  contextCheck,
  type GenerationScope,
  promptTokens,
  readRequest,
  runGeneration,
  type StartedGeneration,
  schemaCache,
  usageHeaders,
} from "./generation";

type C = Context<EdgeEnv>;

const schemaFor = schemaCache(completionRequestSchema);

/** Prepares prompt `k` and starts its Generate call; resolves with its first event and its prompt text. */
async function startPrompt(
  scope: GenerationScope,
  ctx: AppContext,
  plan: CompletionPlan,
  k: number,
): Promise<StartedGeneration & { promptText: string; prompt: PreparedPrompt }> {
  const prompt = await scope.prepare(completionPrepareInput(plan, k)).catch((err: unknown) => {
    throw promptError(err, plan, k);
  });
  const p = promptTokens(prompt);
  const contextLength = ctx.pool.modelInfo()?.contextLength;
  try {
    contextCheck(p, plan.maxTokensExplicit ? plan.maxTokens : undefined, contextLength, "prompt");
  } catch (err) {
    throw promptError(err, plan, k);
  }
  const params = { ...plan.params };
  // The default 16 tokens shrink to what the context has left, as in vLLM; an explicit max_tokens must fit.
  if (!plan.maxTokensExplicit) {
    params.maxTokens = contextLength ? Math.min(plan.maxTokens, contextLength - p) : plan.maxTokens;
  }
  const started = await scope.generate({ prompt, params, priority: plan.priority }).catch((err: unknown) => {
    throw renameStructuredError(err, plan.structured?.param);
  });
  // Echo shows a text prompt as sent, and token ids as they decode.
  const promptText = plan.prompts.form === "text" ? (plan.prompts.prompts[k] as string) : prompt.promptText;
  return { ...started, promptText, prompt };
}

/**
 * The events of several started Generate streams in arrival order, tagged with the stream's position.
 * Reads ahead at most one event per stream; a failing stream ends the merge with its error.
 */
async function* merged(streams: readonly StartedGeneration[]): AsyncGenerator<[number, GenerateEvent]> {
  type Next = { k: number; r: IteratorResult<GenerateEvent> };
  const pending = new Map<number, Promise<Next>>();
  for (const [k, s] of streams.entries()) pending.set(k, Promise.resolve({ k, r: s.first }));
  try {
    while (pending.size > 0) {
      const { k, r } = await Promise.race(pending.values());
      if (r.done) {
        pending.delete(k);
        continue;
      }
      const s = streams[k] as StartedGeneration;
      pending.set(
        k,
        s.events.next().then((r) => ({ k, r })),
      );
      yield [k, r.value];
    }
  } finally {
    // Reads nobody will wait for any more: they settle when the request's streams are cancelled.
    for (const p of pending.values()) p.catch(() => {});
  }
}

function completionId(): string {
  return `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
}

async function complete(c: C, ctx: AppContext): Promise<Response> {
  const start = performance.now();
  const { req, plan } = await readRequest(c, ctx, schemaFor(ctx.config.maxN), planCompletion);
  const model = await checkModel(req.model, ctx);
  setRequestModel(model);
  const prompts = plan.prompts.prompts.length;
  const sequences = checkSequences(
    ctx,
    prompts * plan.params.n,
    plan.params.n > 1 ? "n" : "prompt",
    `${prompts} prompt(s) x n=${plan.params.n}`,
  );
  return runGeneration(
    c,
    ctx,
    start,
    async (scope) => {
      const count = plan.prompts.prompts.length;
      const started = await Promise.all(Array.from({ length: count }, (_, k) => startPrompt(scope, ctx, plan, k)));
      const id = completionId();
      const created = Math.floor(Date.now() / 1000);
      const n = plan.params.n;
      const echo = plan.echo ? started.map((s) => s.promptText) : undefined;

      if (!plan.stream) {
        const col = new TextCompletionCollector(count, { n, logprobs: plan.logprobs, stop: plan.params.stop, echo });
        for await (const [k, ev] of merged(started)) {
          col.add(k, ev);
          if (ev.type === "final") account(c, ctx, ev.usage);
        }
        const body = col.body(id, created, model);
        return c.json(body, 200, usageHeaders(body.usage, count === 1 ? col.timings[0] : undefined));
      }

      return scope.stream(async (send, aborted) => {
        const chunks = new TextChunkBuilder(id, created, model, plan.includeUsage, plan.logprobs);
        let usage: ReturnType<typeof addUsage> | undefined;
        let finals = 0;
        let completion = 0;
        const prompts = started.map((s) => s.prompt);
        const running = () =>
          plan.continuousUsage && plan.includeUsage ? runningUsageJson(prompts, completion) : undefined;
        if (echo) {
          for (const [k, text] of echo.entries())
            for (let j = 0; j < n; j++) await send(chunks.text(k * n + j, text, [], running()));
        }
        for await (const [k, ev] of merged(started)) {
          if (aborted()) return;
          if (ev.type === "token") {
            completion += ev.tokenIds.length;
            ctx.metrics.streamedTokens.add(ev.tokenIds.length);
            if (ev.text !== "" || (plan.logprobs !== null && ev.logprobs.length > 0)) {
              await send(chunks.text(k * n + ev.index, ev.text, ev.logprobs, running()));
            }
          } else if (ev.type === "choice_end") {
            const stop = stopReasonJson(ev.stopReason, plan.params.stop);
            await send(chunks.finish(k * n + ev.index, ev.finishReason, stop, running()));
          } else {
            account(c, ctx, ev.usage);
            usage = addUsage(usage, ev.usage);
            finals++;
          }
        }
        if (plan.includeUsage && usage && finals === count) await send(chunks.usage(usageJson(usage)));
      });
    },
    sequences,
  );
}

/** Registers POST /v1/completions. */
export function registerCompletionRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  app.post("/v1/completions", (c) => complete(c, ctx));
}
