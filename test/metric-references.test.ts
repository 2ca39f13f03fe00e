/**
 * Every metric the deployment reads (the chart's HPA, the KEDA example, the Grafana dashboard) is one the
 * real services export: the stack runs on tiny-a, serves a request and a failing one, and the three
 * services' `/metrics` are scraped. Also: vLLM's names are there with `model_name`, and the edge's
 * `/metrics` carries the gpu-service's vllm:* series like `vllm serve`'s does.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { create, GenerateRequestSchema, GenerationService } from "@minicpmv/proto";
import { createClient } from "@minicpmv/proto/grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { scrape } from "./helpers/metrics";
import { type Stack, startStack } from "./helpers/stack";
import { renderChart } from "./infra/helm-lite";

const REPO = join(import.meta.dirname, "..");
const CHART = join(REPO, "infra/helm/minicpmv");
/** Metric names as they appear in PromQL and metric references. */
const NAME_RE = /\b(?:vllm:[a-z0-9_:]+|minicpmv_[a-z0-9_]+|edge_[a-z0-9_]+)/g;

/** The names a Prometheus text exposition exports (histograms with their _bucket/_sum/_count series). */
function exported(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    out.add(name);
    if (type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) out.add(name + s);
  }
  return out;
}

/** Metric names the chart (autoscaling on), the KEDA example and the dashboards reference, with where. */
function references(): Map<string, string> {
  const refs = new Map<string, string>();
  const add = (text: string, where: string) => {
    for (const n of text.match(NAME_RE) ?? []) if (!refs.has(n)) refs.set(n, where);
  };
  const templates: Record<string, string> = {};
  for (const f of readdirSync(join(CHART, "templates")))
    templates[f] = readFileSync(join(CHART, "templates", f), "utf8");
  const chart = {
    chart: parseYaml(readFileSync(join(CHART, "Chart.yaml"), "utf8")),
    values: parseYaml(readFileSync(join(CHART, "values.yaml"), "utf8")),
    templates,
  };
  const objs = renderChart(
    chart,
    { name: "minicpmv", namespace: "minicpmv" },
    { gpuService: { autoscaling: { enabled: true } } },
  );
  for (const o of objs) add(JSON.stringify(o.object), `chart ${o.object.kind}/${o.object.metadata.name}`);
  add(readFileSync(join(REPO, "infra/helm/examples/keda-scaledobject.yaml"), "utf8"), "KEDA example");
  for (const f of readdirSync(join(REPO, "infra/grafana"))) {
    add(readFileSync(join(REPO, "infra/grafana", f), "utf8"), `dashboard ${f}`);
  }
  return refs;
}

describe("metrics the deployment reads are metrics the services export", () => {
  let stack: Stack;
  let gpu: string;
  let edge: string;
  let pre: string;

  beforeAll(async () => {
    stack = await startStack();
    const res = await fetch(`${stack.edgeUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "Hello" }], max_tokens: 3, temperature: 0 }),
    });
    expect(res.status).toBe(200);
    await res.json();
    // One the edge turns away (the rejection counter exists too).
    const bad = await fetch(`${stack.edgeUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "Hello" }], max_tokens: -1 }),
    });
    expect(bad.status).toBe(400);
    await bad.json();
    // One request the engine refuses (a token outside the vocabulary): the failure counter exists too.
    const client = createClient(GenerationService, `127.0.0.1:${stack.gpus[0]?.port}`);
    try {
      const events: string[] = [];
      for await (const r of client.generate(create(GenerateRequestSchema, { prompt: { tokenIds: [1 << 30] } }))) {
        events.push(r.event.case ?? "");
      }
      expect(events).toEqual(["error"]);
    } catch {
      // an RPC error status is as good: the engine refused it
    } finally {
      client.close();
    }
    [gpu, edge, pre] = await Promise.all([
      scrape(stack.gpus[0]?.metricsPort as number),
      fetch(`${stack.edgeUrl}/metrics`).then((r) => r.text()),
      scrape(stack.preprocess.metricsPort as number),
    ]);
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it("finds every referenced metric in a scrape of the real services", () => {
    const have = new Set([...exported(gpu), ...exported(edge), ...exported(pre)]);
    const refs = references();
    expect(refs.size).toBeGreaterThan(15);
    expect(refs.get("vllm:num_requests_waiting")).toBeDefined();
    const missing = [...refs].filter(([n]) => !have.has(n)).map(([n, where]) => `${n} (${where})`);
    expect(missing).toEqual([]);
    // The check can fail: the name the chart's HPA used before is not exported.
    expect(have.has("minicpmv_gpu_waiting_requests")).toBe(false);
  });

  it("exports vLLM's names with model_name, on each gpu-service and through the edge's /metrics", () => {
    const names = [
      "vllm:num_requests_running",
      "vllm:num_requests_waiting",
      "vllm:kv_cache_usage_perc",
      "vllm:prefix_cache_queries_total",
      "vllm:prefix_cache_hits_total",
      "vllm:prompt_tokens_total",
      "vllm:generation_tokens_total",
      "vllm:time_to_first_token_seconds_bucket",
      "vllm:inter_token_latency_seconds_bucket",
      "vllm:e2e_request_latency_seconds_bucket",
      "vllm:request_success_total",
    ];
    for (const text of [gpu, edge]) {
      for (const n of names) {
        const line = text.split("\n").find((l) => l.startsWith(`${n}{`));
        expect(line, n).toMatch(/model_name="tiny-a"/);
      }
      expect(text).toMatch(/^vllm:request_success_total\{[^}]*finished_reason="length"[^}]*\} 1$/m);
    }
    expect(edge).toMatch(/^vllm:num_requests_waiting\{replica="127\.0\.0\.1:\d+",model_name="tiny-a",engine="0"\} 0$/m);
    console.log(
      `grep -c '^vllm:' on the scrapes: gpu-service ${gpu.match(/^vllm:/gm)?.length}, edge ${edge.match(/^vllm:/gm)?.length}`,
    );
  });
});
