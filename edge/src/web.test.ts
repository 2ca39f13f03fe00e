import { Hono } from "hono";
import { beforeAll, describe, expect, it } from "vitest";
import { buildWebAssets, registerWebPage, type WebAsset } from "./web";

describe("registerWebPage", () => {
  let assets: Map<string, WebAsset>;
  let app: Hono<{ Variables: { requestId: string } }>;

  beforeAll(() => {
    assets = buildWebAssets();
    app = new Hono<{ Variables: { requestId: string } }>();
    registerWebPage(app, assets);
    app.get("/v1/models", (c) => c.json({ data: [] }));
  });

  it("serves the page with its content type, CSP and ETag", async () => {
    const res = await app.request("/");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("content-security-policy")).toContain("connect-src 'self'");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("etag")).toBe(assets.get("/")?.etag);
    const html = await res.text();
    expect(html).toContain('<script type="module" src="/assets/app.js"></script>');
    expect(html).toContain('<link rel="stylesheet" href="/assets/style.css" />');
  });

  it("serves the bundled script and the stylesheet; the bundle has no bare imports left", async () => {
    const js = await app.request("/assets/app.js");
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    const source = await js.text();
    expect(source).toContain("/v1/chat/completions");
    expect(source).not.toMatch(/^\s*import\s/m);
    const css = await app.request("/assets/style.css");
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect(await css.text()).toContain(".conversation");
  });

  it("answers 304 to a matching If-None-Match and HEAD without a body", async () => {
    const etag = assets.get("/assets/app.js")?.etag ?? "";
    const res = await app.request("/assets/app.js", { headers: { "if-none-match": etag } });
    expect(res.status).toBe(304);
    expect(await res.text()).toBe("");
    const head = await app.request("/assets/style.css", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
  });

  it("serves nothing else: source files, traversal and unknown assets are 404", async () => {
    for (const path of [
      "/assets/main.ts",
      "/assets/../web/src/main.ts",
      "/assets/%2e%2e/%2e%2e/package.json",
      "/index.html",
      "/src/main.ts",
      "/web/style.css",
    ]) {
      expect((await app.request(path)).status, path).toBe(404);
    }
    expect((await app.request("/v1/models")).status).toBe(200);
  });
});
