/**
 * Spans of one Prepare call. Created only when tracing is on (`PrepareDeps.tracer` set), so with tracing
 * off no attribute object is ever built.
 *
 *   minicpmv.v1.PreprocessService/Prepare   (server span, grpc.ts)
 *     ├─ preprocess.fetch_media       per URL
 *     ├─ preprocess.decode_image      per encoded image or client-sampled frame (timed in the worker)
 *     ├─ preprocess.slice_resize      per image or frame (timed in the worker)
 *     ├─ preprocess.video_sample      per video decoded by ffmpeg
 *     └─ preprocess.tokenize
 *
 * Work done in worker threads is timed there (epoch ms) and turned into spans here, with explicit start
 * and end times, under the call's span.
 */
import { type Attributes, type Context, type Span, SpanStatusCode, type Tracer } from "@opentelemetry/api";
import type { SlicedMedia } from "./media";

/** Span names of the preprocess service. */
export const SPAN = {
  fetch: "preprocess.fetch_media",
  decode: "preprocess.decode_image",
  slice: "preprocess.slice_resize",
  video: "preprocess.video_sample",
  tokenize: "preprocess.tokenize",
} as const;

/** Records the spans of one request under `parent`. */
export class RequestTrace {
  constructor(
    private readonly tracer: Tracer,
    private readonly parent: Context,
    private readonly requestId: string,
  ) {}

  /** Starts a span now; the caller ends it. */
  start(name: string, attrs: Attributes = {}): Span {
    return this.tracer.startSpan(name, { attributes: { "request.id": this.requestId, ...attrs } }, this.parent);
  }

  /** A span over an async step; a failure marks it as an error. */
  async wrap<T>(name: string, attrs: Attributes, fn: () => Promise<T>, done?: (span: Span, r: T) => void): Promise<T> {
    const span = this.start(name, attrs);
    try {
      const r = await fn();
      done?.(span, r);
      return r;
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
      throw err;
    } finally {
      span.end();
    }
  }

  /** A span with times measured elsewhere (epoch ms). */
  record(name: string, start: number, end: number, attrs: Attributes): void {
    this.tracer
      .startSpan(name, { startTime: start, attributes: { "request.id": this.requestId, ...attrs } }, this.parent)
      .end(end);
  }

  /** Decode and slice spans of one processed image or frame. */
  media(m: SlicedMedia, field: string, bytes: number | undefined): void {
    const size = { "image.width": m.sourceWidth, "image.height": m.sourceHeight, "media.field": field };
    const t = m.timings;
    if (t.decode) this.record(SPAN.decode, t.decode[0], t.decode[1], { ...size, "media.bytes": bytes ?? 0 });
    const grid = m.gridSlicing ? `${m.gridSlicing[0]}x${m.gridSlicing[1]}` : "none";
    this.record(SPAN.slice, t.slice[0], t.slice[1], { ...size, "image.slices": m.slices.length, "image.grid": grid });
  }
}
