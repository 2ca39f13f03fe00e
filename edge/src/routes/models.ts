/** GET /v1/models: the one served model, in vLLM's shape. */
import type { Hono } from "hono";
import type { AppContext, EdgeEnv } from "../app";

/** Registers GET /v1/models. */
export function registerModelRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  const created = Math.floor(Date.now() / 1000);
  app.get("/v1/models", async (c) => {
    const id = await ctx.modelName();
    const info = ctx.pool.modelInfo();
    return c.json({
      object: "list",
      data: [
        {
          id,
          object: "model",
          created,
          owned_by: "minicpmv",
          root: info?.modelName || id,
          parent: null,
          max_model_len: info?.contextLength ?? null,
          permission: [],
        },
      ],
    });
  });
}
