/**
 * Probes.
 *
 *   GET /health, GET /readyz, GET|POST /ping   200 only when the preprocess service and at least one
 *                                              gpu-service replica are healthy (vLLM's /health and /ping;
 *                                              the readiness probe), else 503 with what is down
 *   GET /livez                                  200 while this edge process serves HTTP; never looks at the
 *                                              backends, so a model loading elsewhere does not restart the edge
 *   GET /version                                {"version": ...} like vLLM's /version
 */
import { readFileSync } from "node:fs";
import type { Context, Hono } from "hono";
import type { AppContext, EdgeEnv } from "../app";

/** This package's version (edge/package.json). */
export const EDGE_VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/** Registers the probe routes. */
export function registerHealthRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  const ready = async (c: Context<EdgeEnv>) => {
    const deadline = new Date(Date.now() + 2000);
    const [preprocess] = await Promise.all([ctx.preprocess.healthy({ deadline }), ctx.pool.poll()]);
    ctx.metrics.backendHealthy.record(preprocess ? 1 : 0, { backend: "preprocess", service: "preprocess" });
    const gpu = ctx.pool.replicas.map((r) => ({
      address: r.backend.address,
      healthy: r.healthy,
      ...(r.healthy ? {} : { error: r.lastError ?? null }),
    }));
    const ok = preprocess && ctx.pool.anyHealthy();
    return c.json(
      { status: ok ? "ok" : "unavailable", preprocess: { healthy: preprocess }, gpu_service: gpu },
      ok ? 200 : 503,
    );
  };
  app.get("/health", ready);
  app.get("/readyz", ready);
  app.get("/ping", ready);
  app.post("/ping", ready);
  app.get("/livez", (c) => c.json({ status: "ok" }));
  app.get("/version", (c) => c.json({ version: EDGE_VERSION }));
}
