/**
 * Spans of the gpu-service, made on the gRPC thread from times the engine measured in its worker thread
 * (epoch ms, explicit start and end). Only called when tracing is on.
 *
 *   minicpmv.v1.GenerationService/Generate   (server span, grpc.ts; child of the edge's HTTP span)
 *     ├─ gpu.queue_wait       arrival -> first scheduled
 *     ├─ gpu.vision_encode    per image / frame: slices, cache hit
 *     ├─ gpu.prefill          first scheduled -> first token: prompt and cached tokens
 *     └─ gpu.decode           first token -> last token: tokens generated
 *
 *   engine.step  (its own trace, one per step) ──links──> the Generate span of each request in the batch
 */
import { type Attributes, type Context, type Link, SpanKind, type Tracer, trace } from "@opentelemetry/api";
import type { RequestTimeline, StepRecord, TraceLink, Usage } from "./engine/types";

/** Span names of the gpu-service. */
export const SPAN = {
  queue: "gpu.queue_wait",
  vision: "gpu.vision_encode",
  prefill: "gpu.prefill",
  decode: "gpu.decode",
  step: "engine.step",
} as const;

/** The ids to hand the engine for the span in `ctx` (undefined when there is none). */
export function traceLinkOf(ctx: Context): TraceLink | undefined {
  const sc = trace.getSpanContext(ctx);
  return sc ? { traceId: sc.traceId, spanId: sc.spanId, traceFlags: sc.traceFlags } : undefined;
}

function record(tracer: Tracer, parent: Context, name: string, start: number, end: number, attrs: Attributes): void {
  tracer.startSpan(name, { startTime: start, attributes: attrs }, parent).end(Math.max(start, end));
}

/** The stage spans of one finished request, children of its Generate span (`parent`). */
export function recordRequestSpans(
  tracer: Tracer,
  parent: Context,
  t: RequestTimeline,
  usage: Usage,
  base: Attributes,
): void {
  const scheduled = t.scheduledAt ?? t.endedAt;
  record(tracer, parent, SPAN.queue, t.arrivedAt, scheduled, base);
  for (const v of t.vision) {
    record(tracer, parent, SPAN.vision, v.start, v.end, {
      ...base,
      "vision.slices": v.slices,
      "vision.cache_hit": v.cacheHit,
    });
  }
  if (t.scheduledAt === undefined) return;
  record(tracer, parent, SPAN.prefill, t.scheduledAt, t.firstTokenAt ?? t.endedAt, {
    ...base,
    "gen_ai.usage.input_tokens": usage.promptTokens,
    "prompt.cached_tokens": usage.cachedPromptTokens,
  });
  if (t.firstTokenAt === undefined) return;
  record(tracer, parent, SPAN.decode, t.firstTokenAt, t.lastTokenAt ?? t.firstTokenAt, {
    ...base,
    "gen_ai.usage.output_tokens": usage.completionTokens,
  });
}

/** One `engine.step` span linked to (not nested in) the spans of the requests it ran. */
export function recordStep(tracer: Tracer, rec: StepRecord): void {
  const links: Link[] = rec.links.map((l) => ({ context: { ...l, isRemote: false } }));
  tracer
    .startSpan(
      SPAN.step,
      {
        kind: SpanKind.INTERNAL,
        root: true,
        startTime: rec.start,
        links,
        attributes: {
          "engine.batch.seqs": rec.seqs,
          "engine.batch.tokens": rec.tokens,
          "engine.batch.prefill_seqs": rec.prefillSeqs,
          "engine.batch.requests": rec.links.length,
        },
      },
      // NOTE: a step serves many requests; it starts its own trace instead of nesting in any one of them.
      undefined,
    )
    .end(rec.end);
}
