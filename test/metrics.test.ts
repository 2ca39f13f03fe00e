/**
 * Each service's `/metrics` (OpenTelemetry instruments, Prometheus text) after real requests through the
 * stack on tiny-a, with tracing off (the default): the named series exist with the values the requests
 * imply.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack";

const IMAGE = readFileSync(join(import.meta.dirname, "../../shared/golden/images/img_640x480.png"));

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  prompt_tokens_details: { image_tokens: number; text_tokens: number };
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format (no escapes inside label values are needed here). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g))
      labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample named `name` whose labels include `labels`. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

async function scrape(url: string): Promise<Sample[]> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
  return parse(await res.text());
}

describe("metrics of the three services", () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it("exposes the named series with the values two requests imply", async () => {
    const res = await fetch(`${stack.edgeUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        messages: [
          {
            role: "user",
            content: [
              { type: "image_url", image_url: { url: `data:image/png;base64,${IMAGE.toString("base64")}` } },
              { type: "text", text: "Describe it." },
            ],
          },
        ],
        max_tokens: 3,
        temperature: 0,
        ignore_eos: true,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    expect(res.status).toBe(200);
    const events = (await res.text())
      .split("\n\n")
      .filter((b) => b.startsWith("data: {"))
      .map((b) => JSON.parse(b.slice(6)) as { model: string; usage?: Usage | null });
    const usage = events.at(-1)?.usage as Usage;
    expect(usage.completion_tokens).toBe(3);
    const model = events[0]?.model as string;
    const bad = await fetch(`${stack.edgeUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [] }),
    });
    expect(bad.status).toBe(400);

    const chat = { method: "POST", route: "/v1/chat/completions" };
    const edge = await scrape(`${stack.edgeUrl}/metrics`);
    expect(value(edge, "edge_http_requests_total", { ...chat, status: "200" })).toBe(1);
    expect(value(edge, "edge_http_requests_total", { ...chat, status: "400" })).toBe(1);
    expect(value(edge, "edge_http_request_duration_seconds_count", { ...chat, status: "200" })).toBe(1);
    expect(value(edge, "edge_http_request_duration_seconds_sum", { ...chat, status: "200" })).toBeGreaterThan(0);
    expect(value(edge, "edge_streamed_tokens_total")).toBe(3);
    expect(value(edge, "edge_generated_tokens_total")).toBe(3);
    expect(value(edge, "edge_prompt_tokens_total", { modality: "image" })).toBe(
      usage.prompt_tokens_details.image_tokens,
    );
    expect(value(edge, "edge_time_to_first_token_seconds_count")).toBe(1);
    expect(value(edge, "edge_rejected_requests_total", { reason: "validation" })).toBe(1);
    expect(value(edge, "edge_requests_in_flight")).toBe(0);
    const gpuAddr = `127.0.0.1:${stack.gpus[0]?.port}`;
    expect(value(edge, "edge_backend_healthy", { backend: gpuAddr, service: "gpu-service" })).toBe(1);
    expect(value(edge, "edge_backend_healthy", { backend: "preprocess", service: "preprocess" })).toBe(1);
    expect(value(edge, "process_resident_memory_bytes")).toBeGreaterThan(1e6);

    const pre = await scrape(`http://127.0.0.1:${stack.preprocess.metricsPort}/metrics`);
    expect(value(pre, "preprocess_requests_total", { code: "OK" })).toBe(1);
    expect(value(pre, "preprocess_duration_ms_count")).toBe(1);
    expect(value(pre, "preprocess_prompt_tokens_total", { modality: "image" })).toBe(
      usage.prompt_tokens_details.image_tokens,
    );
    expect(value(pre, "preprocess_prompt_tokens_total", { modality: "text" })).toBe(
      usage.prompt_tokens_details.text_tokens,
    );

    const gpu = await scrape(`http://127.0.0.1:${stack.gpus[0]?.metricsPort}/metrics`);
    const L = { model_name: model, engine: "0" };
    expect(value(gpu, "vllm:generation_tokens_total", L)).toBe(3);
    expect(value(gpu, "vllm:prompt_tokens_total", L)).toBe(usage.prompt_tokens);
    expect(value(gpu, "vllm:request_success_total", { ...L, finished_reason: "length" })).toBe(1);
    expect(value(gpu, "vllm:time_to_first_token_seconds_count", L)).toBe(1);
    expect(value(gpu, "vllm:inter_token_latency_seconds_count", L)).toBe(2);
    expect(value(gpu, "vllm:e2e_request_latency_seconds_count", L)).toBe(1);
    expect(value(gpu, "minicpmv_request_vision_encode_time_seconds_sum", L)).toBeGreaterThan(0);
    expect(value(gpu, "vllm:num_requests_running", L)).toBe(0);
    expect(value(gpu, "vllm:num_requests_waiting", L)).toBe(0);
    // The finished request's blocks stay cached for prefix reuse: usage is a fraction, not 0 necessarily.
    const kv = value(gpu, "vllm:kv_cache_usage_perc", L) as number;
    expect(kv >= 0 && kv <= 1).toBe(true);
    expect(value(gpu, "vllm:mm_cache_queries_total", L)).toBe(1);
    expect(value(gpu, "vllm:mm_cache_hits_total", L)).toBe(0);
    expect(value(gpu, "vllm:num_preemptions_total", L)).toBe(0);
  });
});
