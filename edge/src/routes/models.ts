/** GET /v1/models and GET /v1/models/{id}: the one served model, in vLLM's shape. */
import type { Hono } from "hono";
import type { AppContext, EdgeEnv } from "../app";
import { checkModel } from "./generation";

/** Registers GET /v1/models and GET /v1/models/{id} (OpenAI's models.retrieve; ids may contain "/"). */
export function registerModelRoutes(app: Hono<EdgeEnv>, ctx: AppContext): void {
  const created = Math.floor(Date.now() / 1000);
  const card = async () => {
    const id = await ctx.modelName();
    const info = ctx.pool.modelInfo();
    return {
      id,
      object: "model",
      created,
      owned_by: "minicpmv",
      root: info?.modelName || id,
      parent: null,
      max_model_len: info?.contextLength ?? null,
      permission: [],
    };
  };
  app.get("/v1/models", async (c) => c.json({ object: "list", data: [await card()] }));
  app.get("/v1/models/:id{.+}", async (c) => {
    await checkModel(c.req.param("id"), ctx);
    return c.json(await card());
  });
}
