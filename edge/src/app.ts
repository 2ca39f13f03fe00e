/**
 * The edge's Hono app. Backends are injected, so unit tests drive it with `app.request()` and in-process
 * fakes, and main.ts with the gRPC clients.
 *
 *   client ──HTTP──> [span + metrics] [request id] [cors] [auth + rate limit on /v1] [body limit] ──> routes
 *                                                                                  │
 *     POST /v1/chat/completions ── planChat ── Prepare (preprocess) ── GpuPool.generate (gpu-service) ── JSON | SSE
 *     POST /v1/chat/completions/render ── planChat ── Prepare ── token count and layout
 *     POST /v1/completions ── planCompletion ── Prepare (raw text | token ids) per prompt ── GpuPool.generate ── JSON | SSE
 *     GET /v1/models, GET /health (= /readyz, /ping), GET /livez, GET /version, GET /metrics
 */

import type { Tracer } from "@opentelemetry/api";
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { requestId } from "hono/request-id";
import type { Logger } from "pino";
import { ApiKeys } from "./auth";
import type { GpuPool } from "./backends/gpu-pool";
import type { PreprocessBackend } from "./backends/types";
import type { EdgeConfig } from "./config";
import { EdgeError, httpError } from "./errors";
import { EdgeMetrics } from "./metrics";
import { observe } from "./observe";
import { RateLimiter } from "./rate-limit";
import { registerChatRoutes } from "./routes/chat";
import { registerCompletionRoutes } from "./routes/completions";
import { registerHealthRoutes } from "./routes/health";
import { registerMetricsRoutes } from "./routes/metrics";
import { registerModelRoutes } from "./routes/models";
import { registerTokenizeRoutes } from "./routes/tokenize";
import { registerWebPage } from "./web";

/** The model id used when neither SERVED_MODEL_NAME nor a gpu-service's Info names one. */
export const DEFAULT_MODEL_NAME = "openbmb/MiniCPM-V-2_6";

/** What the app needs from outside. */
export interface AppDeps {
  config: EdgeConfig;
  preprocess: PreprocessBackend;
  pool: GpuPool;
  metrics?: EdgeMetrics;
  logger?: Logger;
  /** Records one span per HTTP request when set (tracing on); undefined keeps tracing at zero cost. */
  tracer?: Tracer | undefined;
  /** Aborted on shutdown, after the grace period: cancels every in-flight request. */
  shutdownSignal?: AbortSignal;
  /** Serve the browser chat page at / (default true; unit tests turn it off to skip bundling it). */
  webPage?: boolean;
}

/** Hono variables set by the middleware. */
export type EdgeEnv = { Variables: { requestId: string; caller: string } };

/** Shared state handed to the route modules. */
export interface AppContext {
  config: EdgeConfig;
  preprocess: PreprocessBackend;
  pool: GpuPool;
  metrics: EdgeMetrics;
  logger: Logger | undefined;
  limiter: RateLimiter;
  shutdownSignal: AbortSignal | undefined;
  /** Generating requests (chat and completions) in flight (for the concurrency cap). */
  inflight: { count: number };
  /** The model id clients must use (or omit). */
  modelName(): Promise<string>;
}

const ROUTES = new Set([
  "/v1/chat/completions",
  "/v1/chat/completions/render",
  "/v1/completions",
  "/v1/models",
  "/tokenize",
  "/detokenize",
  "/health",
  "/readyz",
  "/livez",
  "/ping",
  "/version",
  "/metrics",
]);

/** Builds the edge app. */
export function createApp(deps: AppDeps): Hono<EdgeEnv> {
  const { config } = deps;
  const metrics = deps.metrics ?? new EdgeMetrics();
  const keys = new ApiKeys(config.apiKeys);
  const ctx: AppContext = {
    config,
    preprocess: deps.preprocess,
    pool: deps.pool,
    metrics,
    logger: deps.logger,
    limiter: new RateLimiter(config.rateLimitRpm, config.rateLimitTpm),
    shutdownSignal: deps.shutdownSignal,
    inflight: { count: 0 },
    async modelName() {
      if (config.servedModelName) return config.servedModelName;
      if (!deps.pool.modelInfo()) await deps.pool.poll();
      return deps.pool.modelInfo()?.modelName || DEFAULT_MODEL_NAME;
    },
  };

  deps.pool.events = {
    onHealthChange(address, healthy, reason) {
      metrics.backendHealthy.record(healthy ? 1 : 0, { backend: address, service: "gpu-service" });
      deps.logger?.[healthy ? "info" : "warn"]({ backend: address, healthy, reason }, "gpu-service health changed");
    },
    onRetry(address, err) {
      metrics.retries.add(1, { backend: address });
      deps.logger?.warn({ backend: address, err: err.message }, "retrying Generate on another replica");
    },
  };
  for (const r of deps.pool.replicas) {
    metrics.backendHealthy.record(r.healthy ? 1 : 0, { backend: r.backend.address, service: "gpu-service" });
  }

  const app = new Hono<EdgeEnv>();

  // The HTTP span and metrics; a streamed body is measured until its last byte (or until the client goes away).
  app.use(observe(metrics, deps.tracer, ROUTES));
  app.use(requestId());
  if (config.corsOrigins.length > 0) {
    const origins = config.corsOrigins;
    app.use(cors({ origin: origins.includes("*") ? "*" : origins, exposeHeaders: ["x-request-id", "retry-after"] }));
  }

  app.onError((err, c) => {
    const e = httpError(err);
    if (e.status === 500)
      deps.logger?.error(
        { err, detail: err instanceof EdgeError ? err.extra.detail : undefined, request_id: c.get("requestId") },
        "request failed",
      );
    else if (e.status > 500)
      deps.logger?.warn({ err: e.body.error.message, request_id: c.get("requestId") }, "request failed");
    return c.json(e.body, e.status as 400, e.headers);
  });
  app.notFound((c) => {
    const e = httpError(new EdgeError("not_found", `no route for ${c.req.method} ${c.req.path}`));
    return c.json(e.body, 404);
  });

  // API keys and per-key rate limits guard the OpenAI API and vLLM's /tokenize and /detokenize; /health and
  // /metrics stay open for probes.
  const guard: MiddlewareHandler<EdgeEnv> = async (c, next) => {
    if (c.req.method === "OPTIONS") return next();
    const caller = keys.identify(c.req.header("authorization"));
    if (caller === null) {
      metrics.reject("auth");
      throw new EdgeError("unauthorized", "missing or invalid API key (send Authorization: Bearer <key>)", {
        reason: "auth",
      });
    }
    c.set("caller", caller);
    const adm = ctx.limiter.admit(caller);
    if (!adm.ok) {
      metrics.reject(adm.reason);
      throw new EdgeError("rate_limited", adm.message, { retryAfterS: adm.retryAfterS, reason: adm.reason });
    }
    await next();
  };
  const limitBody = bodyLimit({
    maxSize: config.maxBodyBytes,
    onError: () => {
      metrics.reject("body_too_large");
      throw new EdgeError("invalid_request", `request body is larger than the limit of ${config.maxBodyBytes} bytes`, {
        param: "body",
        reason: "body_too_large",
      });
    },
  });
  // NOTE: only JSON bodies. A browser sends text/plain and form bodies cross-site without a preflight, so
  // parsing them as JSON would let any web page call an open API from its visitors' browsers.
  const jsonOnly: MiddlewareHandler<EdgeEnv> = async (c, next) => {
    if (c.req.method === "POST") {
      const type = (c.req.header("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
      if (type !== "application/json") {
        metrics.reject("content_type");
        throw new EdgeError(
          "unsupported_media_type",
          `content-type must be application/json, got ${type ? JSON.stringify(type.slice(0, 100)) : "none"}`,
          { param: "content-type", reason: "content_type" },
        );
      }
    }
    await next();
  };
  for (const path of ["/v1/*", "/tokenize", "/detokenize"]) app.use(path, guard, limitBody);
  for (const path of [
    "/v1/chat/completions",
    "/v1/chat/completions/render",
    "/v1/completions",
    "/tokenize",
    "/detokenize",
  ])
    app.use(path, jsonOnly);

  registerChatRoutes(app, ctx);
  registerCompletionRoutes(app, ctx);
  registerModelRoutes(app, ctx);
  registerTokenizeRoutes(app, ctx);
  registerHealthRoutes(app, ctx);
  registerMetricsRoutes(app, ctx);
  if (deps.webPage ?? true) registerWebPage(app);
  return app;
}
