/**
 * The edge app over in-process fakes, for unit tests (`app.request()`, no sockets): setup, JSON posts,
 * SSE parsing and error bodies.
 */
import { expect } from "vitest";
import { createApp } from "../app";
import { GpuPool } from "../backends/gpu-pool";
import { type EdgeConfig, loadConfig } from "../config";
import { EdgeMetrics } from "../metrics";
import { FakeGpu, FakePreprocess } from "./fakes";

/** An app with a fake preprocess and `nGpus` fake replicas, configured from `env`. */
export function setup(env: Record<string, string> = {}, nGpus = 1) {
  const config: EdgeConfig = loadConfig(env);
  const pre = new FakePreprocess();
  const gpus = Array.from({ length: nGpus }, (_, i) => new FakeGpu(`gpu-${i}`));
  const pool = new GpuPool(gpus, {}, { ejectAfterFailures: config.gpuEjectAfterFailures });
  const metrics = new EdgeMetrics();
  const app = createApp({ config, preprocess: pre, pool, metrics, webPage: false });
  return { app, pre, gpus, pool, metrics, config };
}

/** What `setup` returns. */
export type Harness = ReturnType<typeof setup>;

/** The first fake replica. */
export const gpu0 = (s: Harness) => s.gpus[0] as FakeGpu;

/** POSTs `body` (JSON-encoded unless a string) to `path`. */
export function postJson(
  app: Harness["app"],
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
  init: RequestInit = {},
) {
  return app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

/** Parses an SSE body into its data payloads (JSON-decoded, except [DONE]). */
export function sseEvents(text: string): unknown[] {
  expect(text.endsWith("\n\n")).toBe(true);
  return text
    .trim()
    .split("\n\n")
    .map((block) => {
      expect(block.startsWith("data: ")).toBe(true);
      const data = block.slice("data: ".length);
      return data === "[DONE]" ? "[DONE]" : JSON.parse(data);
    });
}

/** The `error` object of an error response. */
export async function errorOf(res: Response) {
  return ((await res.json()) as { error: { message: string; type: string; param: string | null; code: number } }).error;
}

/**
 * Asserts a validation rejection: 400 BadRequestError naming `param` first in its message, nothing sent to the
 * backends, counted under reason="validation".
 */
export async function expectValidationError(s: Harness, res: Response, param: string, message: RegExp) {
  expect(res.status).toBe(400);
  const e = await errorOf(res);
  expect(e).toMatchObject({ type: "BadRequestError", param, code: 400 });
  expect(e.message).toMatch(message);
  expect(e.message.startsWith(param)).toBe(true);
  expect(s.pre.calls).toHaveLength(0);
  expect(await s.metrics.render()).toContain('edge_rejected_requests_total{reason="validation"} 1');
}

/** Reads a streamed body until `needle` has arrived; returns the reader, to cancel it (a client going away). */
export async function readUntil(res: Response, needle: string) {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  let seen = "";
  while (!seen.includes(needle)) seen += new TextDecoder().decode((await reader.read()).value);
  return reader;
}
