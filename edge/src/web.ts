/**
 * The web chat page served at `/`: static HTML and CSS from `edge/web/`, and the page's
 * TypeScript (`edge/web/src/main.ts`) bundled once with esbuild when the edge starts.
 * Everything is held in memory; only the fixed routes below exist, so no request path
 * ever reaches the file system.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { buildSync } from "esbuild";
import type { Env, Hono, Schema } from "hono";

/** A file the page needs, ready to send. */
export interface WebAsset {
  body: Uint8Array;
  contentType: string;
  etag: string;
}

/** Where the page source lives (index.html, style.css, src/). */
export const WEB_DIR = fileURLToPath(new URL("../web/", import.meta.url));

// NOTE: the page only talks to its own origin; data: and blob: are for attachment thumbnails.
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "media-src 'self' data: blob:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Reads and bundles the page. Throws with esbuild's messages when the page source does not build. */
export function buildWebAssets(webDir: string = WEB_DIR): Map<string, WebAsset> {
  const bundle = buildSync({
    entryPoints: [`${webDir}/src/main.ts`],
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    write: false,
    legalComments: "none",
    logLevel: "silent",
  });
  const js = bundle.outputFiles[0];
  if (js === undefined) throw new Error(`web page build produced no output from ${webDir}/src/main.ts`);
  return new Map([
    ["/", asset(readFileSync(`${webDir}/index.html`), "text/html; charset=utf-8")],
    ["/assets/app.js", asset(js.contents, "text/javascript; charset=utf-8")],
    ["/assets/style.css", asset(readFileSync(`${webDir}/style.css`), "text/css; charset=utf-8")],
  ]);
}

function asset(body: Uint8Array, contentType: string): WebAsset {
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`;
  return { body, contentType, etag };
}

/**
 * Serves the chat page at `/` and its assets under `/assets/` (GET and HEAD).
 * Register it before any catch-all route; the page's own API calls go to `/v1/*`,
 * so API-key middleware should cover `/v1/*` only, not these routes.
 */
export function registerWebPage<E extends Env, S extends Schema, B extends string>(
  app: Hono<E, S, B>,
  assets: Map<string, WebAsset> = buildWebAssets(),
): void {
  for (const [path, file] of assets) {
    app.get(path, (c) => {
      const headers: Record<string, string> = {
        "content-type": file.contentType,
        "cache-control": "no-cache",
        etag: file.etag,
        "x-content-type-options": "nosniff",
      };
      if (path === "/") {
        headers["content-security-policy"] = CONTENT_SECURITY_POLICY;
        headers["referrer-policy"] = "no-referrer";
      }
      if (c.req.header("if-none-match") === file.etag) return c.body(null, 304, headers);
      return c.body(file.body as Uint8Array<ArrayBuffer>, 200, headers);
    });
  }
}
