/**
 * GET /metrics: Prometheus text exposition of the edge's own series (`edge_*`), followed by the gpu-service
 * replicas' `vllm:*` / `minicpmv_*` series when GPU_METRICS_URLS names them (backends/backend-metrics.ts).
 */
import type { Hono } from "hono";
import type { AppContext, EdgeEnv } from "../app";
import { scrapeReplicas } from "../backends/backend-metrics";

/** Registers GET /metrics. */
export function registerMetricsRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  app.get("/metrics", async (c) => {
    for (const r of ctx.pool.replicas) {
      ctx.metrics.backendHealthy.record(r.healthy ? 1 : 0, { backend: r.backend.address, service: "gpu-service" });
    }
    const urls = ctx.config.gpuMetricsUrls;
    const [own, replicas] = await Promise.all([
      ctx.metrics.render(),
      urls.length > 0 ? scrapeReplicas(urls) : Promise.resolve(""),
    ]);
    return c.text(own + replicas, 200, { "content-type": ctx.metrics.contentType });
  });
}
