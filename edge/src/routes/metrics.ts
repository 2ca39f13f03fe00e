/** GET /metrics: Prometheus text exposition. */
import type { Hono } from "hono";
import type { AppContext, EdgeEnv } from "../app";

/** Registers GET /metrics. */
export function registerMetricsRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  app.get("/metrics", async (c) => {
    for (const r of ctx.pool.replicas) {
      ctx.metrics.backendHealthy.record(r.healthy ? 1 : 0, { backend: r.backend.address, service: "gpu-service" });
    }
    return c.text(await ctx.metrics.render(), 200, { "content-type": ctx.metrics.contentType });
  });
}
