/** GET /health: 200 only when the preprocess service and at least one gpu-service replica are healthy. */
import type { Hono } from "hono";
import type { AppContext, EdgeEnv } from "../app";

/** Registers GET /health. */
export function registerHealthRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  app.get("/health", async (c) => {
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
  });
}
