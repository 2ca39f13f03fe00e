/**
 * The outermost middleware: one HTTP server span per request (child of the caller's W3C `traceparent`,
 * active while the backends are called so their gRPC calls carry it) and the HTTP metrics. Both end at
 * the response's last byte: for SSE when the stream closes or the client goes away.
 */
import {
  context,
  type Context as OtelContext,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import type { MiddlewareHandler } from "hono";
import type { EdgeEnv } from "./app";
import type { EdgeMetrics } from "./metrics";

/** Span attribute keys set by the edge. */
export const ATTR = {
  requestId: "request.id",
  model: "gen_ai.request.model",
} as const;

const headerGetter: TextMapGetter<Headers> = {
  keys: (h) => {
    const out: string[] = [];
    h.forEach((_, k) => {
      out.push(k);
    });
    return out;
  },
  get: (h, key) => h.get(key) ?? undefined,
};

/** Sets the served model on the request's span (a no-op when tracing is off). */
export function setRequestModel(model: string): void {
  trace.getActiveSpan()?.setAttribute(ATTR.model, model);
}

/**
 * HTTP span + metrics middleware. `routes` are the known paths (anything else is labelled "other");
 * with `tracer` undefined (tracing off) no span, context or attribute is built.
 */
export function observe(
  metrics: EdgeMetrics,
  tracer: Tracer | undefined,
  routes: ReadonlySet<string>,
): MiddlewareHandler<EdgeEnv> {
  return async (c, next) => {
    const start = performance.now();
    const route = routes.has(c.req.path) ? c.req.path : "other";
    let span: Span | undefined;
    let spanCtx: OtelContext | undefined;
    if (tracer) {
      const parent = propagation.extract(ROOT_CONTEXT, c.req.raw.headers, headerGetter);
      span = tracer.startSpan(
        `${c.req.method} ${route}`,
        {
          kind: SpanKind.SERVER,
          attributes: { "http.request.method": c.req.method, "http.route": route, "url.path": c.req.path },
        },
        parent,
      );
      spanCtx = trace.setSpan(parent, span);
    }
    await (spanCtx ? context.with(spanCtx, next) : next());

    const status = c.res.status;
    const labels = { method: c.req.method, route, status };
    const record = () => {
      metrics.httpRequests.add(1, labels);
      metrics.httpDuration.record((performance.now() - start) / 1000, labels);
      if (span) {
        span.setAttribute("http.response.status_code", status);
        const rid = c.get("requestId");
        if (rid) span.setAttribute(ATTR.requestId, rid);
        if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: `HTTP ${status}` });
        span.end();
      }
    };
    const body = c.res.body;
    if (body && c.res.headers.get("content-type")?.startsWith("text/event-stream")) {
      let done = false;
      const once = () => {
        if (!done) record();
        done = true;
      };
      const reader = body.getReader();
      const tapped = new ReadableStream<Uint8Array>(
        {
          async pull(ctrl) {
            const r = await reader.read();
            if (r.done) {
              once();
              ctrl.close();
            } else ctrl.enqueue(r.value);
          },
          cancel(reason) {
            once();
            return reader.cancel(reason);
          },
        },
        { highWaterMark: 0 },
      );
      c.res = new Response(tapped, c.res);
    } else {
      record();
    }
  };
}
