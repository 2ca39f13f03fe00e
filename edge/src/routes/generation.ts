/**
 * What the generating routes (chat and legacy completions) share: body parsing, the model check, the
 * context-length check, usage accounting, and one request's lifetime (`runGeneration`).
 *
 *   runGeneration: concurrency slot ─ cancellation (client gone | deadline | shutdown)
 *      └─ route: scope.prepare ─ scope.generate (first event awaited: errors before it are plain HTTP errors)
 *                  └─ JSON body, or scope.stream: SSE events, an error event if the stream breaks, `data: [DONE]`
 *      every Generate stream is closed and the slot freed when the response ends (or fails before starting)
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { AppContext, EdgeEnv } from "../app";
import type { CallOpts, GenerateEvent, GenerateInput, PreparedPrompt, PrepareInput, Usage } from "../backends/types";
import { EdgeError, httpError } from "../errors";
import type { SchemaLimits } from "../schemas";
import { validationError } from "../schemas";

type C = Context<EdgeEnv>;

/** What `schema.safeParse` needs to be (a zod schema). */
interface Schema<T> {
  safeParse(v: unknown): { success: true; data: T } | { success: false; error: Parameters<typeof validationError>[0] };
}

/** Caches one schema per MAX_N value (building a zod schema costs far more than using one). */
export function schemaCache<S>(build: (limits: SchemaLimits) => S): (maxN: number) => S {
  const cache = new Map<number, S>();
  return (maxN) => {
    let s = cache.get(maxN);
    if (!s) {
      s = build({ maxN });
      cache.set(maxN, s);
    }
    return s;
  };
}

/**
 * Reads the JSON body, validates it with `schema` and turns it into a plan with `plan`; every failure is a
 * 400 naming the field, counted as a validation rejection.
 */
export async function readRequest<T, P>(
  c: C,
  ctx: AppContext,
  schema: Schema<T>,
  plan: (req: T) => P,
): Promise<{ req: T; plan: P }> {
  let raw: unknown;
  try {
    raw = await c.req.json();
  } catch (err) {
    if (err instanceof EdgeError) throw err; // the body limit
    ctx.metrics.reject("validation");
    throw new EdgeError("invalid_request", "request body is not valid JSON", { param: "body", reason: "validation" });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    ctx.metrics.reject("validation");
    throw validationError(parsed.error);
  }
  try {
    return { req: parsed.data, plan: plan(parsed.data) };
  } catch (err) {
    ctx.metrics.reject("validation");
    throw err;
  }
}

/**
 * Checks the sequences one request asks for (prompts x n, or the beam width) against MAX_SEQUENCES_PER_REQUEST;
 * over it is a 400 naming `param` (a size limit: retrying cannot help).
 */
export function checkSequences(ctx: AppContext, sequences: number, param: string, what: string): number {
  const max = ctx.config.maxSequencesPerRequest;
  if (sequences > max) {
    ctx.metrics.reject("validation");
    throw new EdgeError(
      "invalid_request",
      `${param}: the request asks for ${sequences} sequences (${what}), over the limit of ${max} per request`,
      { param, reason: "validation" },
    );
  }
  return sequences;
}

/** The served model id; a request naming another model is a 404. */
export async function checkModel(model: string | null | undefined, ctx: AppContext): Promise<string> {
  const served = await ctx.modelName();
  if (model && model !== served) {
    throw new EdgeError("not_found", `The model \`${model}\` does not exist (this server serves \`${served}\`).`, {
      param: "model",
    });
  }
  return served;
}

/** One request's cancellation: the client going away, the deadline, or the edge shutting down. */
export function requestSignal(c: C, ctx: AppContext): { ac: AbortController; dispose: () => void } {
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

/**
 * Runs Prepare alone (no generation) for a request: its request id, the client's disconnect, the edge's
 * shutdown and the request timeout cancel it. The prompt-token limit is the context's.
 */
export async function prepareOnly(
  c: C,
  ctx: AppContext,
  input: Omit<PrepareInput, "requestId">,
): Promise<PreparedPrompt> {
  // Prepare-only routes (render, tokenize) take a concurrency slot like generation: their media decoding and
  // tokenizing cost the same.
  takeSlots(ctx, 1);
  const { ac, dispose } = requestSignal(c, ctx);
  const requestId = c.get("requestId");
  const deadline = new Date(Date.now() + ctx.config.requestTimeoutMs);
  return callPrepare(ctx, input, { signal: ac.signal, deadline, requestId }).finally(() => {
    dispose();
    ctx.inflight.count -= 1;
  });
}

/** Takes `sequences` concurrency slots, or throws 429 (a lone request is always admitted). */
function takeSlots(ctx: AppContext, sequences: number): void {
  if (ctx.inflight.count > 0 && ctx.inflight.count + sequences > ctx.config.maxConcurrentRequests) {
    ctx.metrics.reject("concurrency");
    throw new EdgeError(
      "overloaded",
      `the server is at its limit of ${ctx.config.maxConcurrentRequests} concurrent sequences; retry later`,
      { retryAfterS: 1, reason: "concurrency" },
    );
  }
  ctx.inflight.count += sequences;
}

/** Prepare with the call's request id and the context's prompt-token limit. */
function callPrepare(
  ctx: AppContext,
  input: Omit<PrepareInput, "requestId">,
  opts: CallOpts & { requestId: string },
): Promise<PreparedPrompt> {
  const options = { ...input.options, maxPromptTokens: promptTokenLimit(ctx) };
  return ctx.preprocess.prepare({ ...input, requestId: opts.requestId, options }, opts);
}

/** The prompt-token limit sent to Prepare: the context length minus one generated token (0: the service's own). */
export function promptTokenLimit(ctx: AppContext): number {
  const info = ctx.pool.modelInfo();
  return info?.contextLength ? info.contextLength - 1 : 0;
}

/** Prompt tokens of a prepared prompt. */
export function promptTokens(prompt: PreparedPrompt): number {
  return prompt.tokenCounts.total || prompt.tokenIds.length;
}

/**
 * Rejects a prompt that leaves no room in the context, or that does not fit with `maxTokens`; `what` is the
 * request field holding the prompt ("messages" for chat, "prompt" for completions).
 */
export function contextCheck(
  promptTokenCount: number,
  maxTokens: number | undefined,
  contextLength: number | undefined,
  what: "messages" | "prompt",
): void {
  if (!contextLength) return;
  const p = promptTokenCount;
  if (p >= contextLength) {
    throw new EdgeError(
      "context_too_long",
      `This model's maximum context length is ${contextLength} tokens. However, your ${what} resulted in ${p} tokens. Please reduce the length of the ${what}.`,
      { param: what, reason: "context_too_long" },
    );
  }
  if (maxTokens !== undefined && p + maxTokens > contextLength) {
    throw new EdgeError(
      "context_too_long",
      `This model's maximum context length is ${contextLength} tokens. However, you requested ${p + maxTokens} tokens (${p} in the ${what}, ${maxTokens} in the completion). Please reduce the length of the ${what} or completion.`,
      { param: "max_tokens", reason: "context_too_long" },
    );
  }
}

/** Records the usage of a finished Generate call: metrics and the caller's token bucket. */
export function account(c: C, ctx: AppContext, u: Usage): void {
  ctx.limiter.charge(c.get("caller"), u.promptTokens + u.completionTokens);
  ctx.metrics.generatedTokens.add(u.completionTokens);
  const m = u.promptTokensByModality;
  ctx.metrics.promptTokens.add(m.text, { modality: "text" });
  ctx.metrics.promptTokens.add(m.image, { modality: "image" });
  ctx.metrics.promptTokens.add(m.video, { modality: "video" });
}

/** A started Generate stream whose first event has arrived (`first.done` when it ended without any). */
export interface StartedGeneration {
  events: AsyncGenerator<GenerateEvent>;
  first: IteratorResult<GenerateEvent>;
}

/** Sends one SSE event (the object as JSON). */
export type SendEvent = (obj: unknown) => Promise<void>;

/** One request's backend calls, under its cancellation and deadline. */
export interface GenerationScope {
  readonly requestId: string;
  readonly signal: AbortSignal;
  readonly opts: CallOpts;
  /** Prepare on the preprocess service, with this request's id and the context's prompt-token limit. */
  prepare(input: Omit<PrepareInput, "requestId">): Promise<PreparedPrompt>;
  /** Starts Generate on the pool and awaits its first event; the stream is closed when the request ends. */
  generate(input: Omit<GenerateInput, "requestId">): Promise<StartedGeneration>;
  /**
   * Answers with an SSE stream written by `write`: a failure becomes a last event with the same body as an
   * HTTP error, then `data: [DONE]`. Closes the scope when the stream ends.
   */
  stream(write: (send: SendEvent, aborted: () => boolean) => Promise<void>): Response;
}

/**
 * Runs one generating request: takes a concurrency slot (429 when none is left), wires cancellation, and
 * releases everything (Generate streams, slot, listeners) when `run`'s response is done. `start` is the
 * request's arrival (performance.now()) for the time-to-first-token metric.
 */
export async function runGeneration(
  c: C,
  ctx: AppContext,
  start: number,
  run: (scope: GenerationScope) => Promise<Response>,
  sequences = 1,
): Promise<Response> {
  // A request costs what it generates: a batch of P prompts with n choices is P*n sequences, against the
  // concurrency cap and the per-key request rate alike.
  takeSlots(ctx, sequences);
  if (sequences > 1) ctx.limiter.chargeRequests(c.get("caller"), sequences - 1);
  ctx.metrics.inFlight.add(1);
  const { ac, dispose } = requestSignal(c, ctx);
  const streams: AsyncGenerator<GenerateEvent>[] = [];
  let handedOff = false;
  let firstSeen = false;
  const close = async () => {
    ac.abort();
    await Promise.all(streams.map((g) => g.return(undefined)));
    ctx.inflight.count -= sequences;
    ctx.metrics.inFlight.add(-1);
    dispose();
  };
  const rid = c.get("requestId");
  const opts: CallOpts & { requestId: string } = {
    signal: ac.signal,
    deadline: new Date(Date.now() + ctx.config.requestTimeoutMs),
    requestId: rid,
  };
  const scope: GenerationScope = {
    requestId: rid,
    signal: ac.signal,
    opts,
    prepare: (input) => callPrepare(ctx, input, opts),
    async generate(input) {
      if (ac.signal.aborted) throw new EdgeError("cancelled", "the client went away");
      const events = ctx.pool.generate({ ...input, requestId: rid }, opts);
      streams.push(events);
      const first = await events.next();
      if (!firstSeen && !first.done && first.value.type === "token") {
        firstSeen = true;
        ctx.metrics.ttft.record((performance.now() - start) / 1000);
      }
      return { events, first };
    },
    stream(write) {
      handedOff = true;
      return streamSSE(c, async (sse) => {
        sse.onAbort(() => ac.abort());
        // A stream that sends nothing for STREAM_STALL_TIMEOUT_MS is ended (its gRPC call cancelled).
        const stallMs = ctx.config.streamStallTimeoutMs;
        let stalled = false;
        let stallTimer: NodeJS.Timeout | undefined;
        const arm = () => {
          if (stallMs <= 0) return;
          clearTimeout(stallTimer);
          stallTimer = setTimeout(() => {
            stalled = true;
            ac.abort();
          }, stallMs);
        };
        const send: SendEvent = async (obj) => {
          await sse.writeSSE({ data: JSON.stringify(obj) });
          arm();
        };
        arm();
        try {
          await write(send, () => sse.aborted);
          // Cancelled by the server (shutdown, stall) while the client is still there: say so.
          if (!sse.aborted && ac.signal.aborted) throw new EdgeError("cancelled", "the stream was ended early");
        } catch (err) {
          // The status is already 200: report the failure as a last event with the same body as an HTTP error.
          if (!sse.aborted) {
            const cause = endedEarly(ctx, stalled, stallMs) ?? err;
            const e = httpError(cause);
            const detail = cause instanceof EdgeError ? cause.extra.detail : String(cause);
            ctx.logger?.warn({ request_id: rid, err: e.body.error.message, detail }, "stream failed after it started");
            await sse.writeSSE({ data: JSON.stringify(e.body) });
          }
        } finally {
          clearTimeout(stallTimer);
          if (!sse.aborted) await sse.writeSSE({ data: "[DONE]" });
          await close();
        }
      });
    },
  };
  try {
    return await run(scope);
  } catch (err) {
    throw endedEarly(ctx, false, 0) ?? err;
  } finally {
    if (!handedOff) await close();
  }
}

/** Why the server ended a request before its end (shutdown, stall), or undefined when it did not. */
function endedEarly(ctx: AppContext, stalled: boolean, stallMs: number): EdgeError | undefined {
  if (stalled) {
    return new EdgeError("timeout", `no token for ${stallMs} ms (STREAM_STALL_TIMEOUT_MS): the stream was ended`);
  }
  if (ctx.shutdownSignal?.aborted) {
    return new EdgeError("unavailable", "the server is shutting down; retry the request", { retryAfterS: 1 });
  }
  return undefined;
}

/** The x-* headers of a non-streaming answer: token counts, and where the time went when known. */
export function usageHeaders(
  usage: { prompt_tokens: number; completion_tokens: number },
  timings: { queueMs: number; visionEncodeMs: number; prefillMs: number; decodeMs: number } | undefined,
): Record<string, string> {
  const headers: Record<string, string> = {
    "x-prompt-tokens": String(usage.prompt_tokens),
    "x-generated-tokens": String(usage.completion_tokens),
  };
  if (timings) {
    headers["x-queue-time-ms"] = timings.queueMs.toFixed(1);
    headers["x-vision-encode-time-ms"] = timings.visionEncodeMs.toFixed(1);
    headers["x-prefill-time-ms"] = timings.prefillMs.toFixed(1);
    headers["x-decode-time-ms"] = timings.decodeMs.toFixed(1);
  }
  return headers;
}
