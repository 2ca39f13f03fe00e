/**
 * Edge gateway benchmark (not a test): what the edge itself costs, with in-process fake backends that answer
 * instantly, so every microsecond measured is HTTP + validation + routing + JSON/SSE work.
 *
 *   bench (client, this process) ──HTTP loopback──> edge child process (Hono + fake backends in-process)
 *
 * Reports:
 *   0. edge CPU time per non-streaming request without sockets (app.request, in the child);
 *   1. added latency: sequential non-streaming requests (1 token), p50/p99, minus the fakes' own time
 *      measured in the child (direct Prepare + Generate calls, no HTTP);
 *   2. requests/s: non-streaming, 1 token, CONCURRENCY clients for DURATION_S;
 *   3. SSE overhead per token: (time of a 257-token stream - time of a 1-token stream) / 256.
 *
 * Run: node --import tsx bench/edge.ts   (env: DURATION_S=5 CONCURRENCY=32 SEQUENTIAL=500)
 */
import { fork } from "node:child_process";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createApp } from "../edge/src/app";
import { GpuPool } from "../edge/src/backends/gpu-pool";
import { loadConfig } from "../edge/src/config";
import { FakeGpu, FakePreprocess } from "../edge/src/testing/fakes";

const env = process.env;
const DURATION_S = Number(env.DURATION_S ?? 5);
const CONCURRENCY = Number(env.CONCURRENCY ?? 32);
const SEQUENTIAL = Number(env.SEQUENTIAL ?? 500);

const body = (maxTokens: number, stream: boolean) =>
  JSON.stringify({
    model: "openbmb/MiniCPM-V-2_6",
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: [{ type: "text", text: "Describe this picture in one sentence." }] },
    ],
    max_tokens: maxTokens,
    temperature: 0.7,
    stream,
  });

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

async function server(): Promise<void> {
  const config = loadConfig({ MAX_CONCURRENT_REQUESTS: "100000" });
  const pre = new FakePreprocess();
  const gpu = new FakeGpu("fake");
  // The fakes record every call; keep them from growing without bound.
  setInterval(() => {
    pre.calls = [];
    pre.metas = [];
    gpu.calls = [];
    gpu.metas = [];
  }, 1000).unref();
  const pool = new GpuPool([gpu]);
  const app = createApp({ config, preprocess: pre, pool, webPage: false });
  const srv = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }) as Server;
  await new Promise<void>((r) => srv.once("listening", () => r()));

  // The fakes' own cost per request (no HTTP, no edge), to subtract from the end-to-end latency.
  const input = {
    requestId: "x",
    messages: [{ role: "user" as const, parts: [{ kind: "text" as const, text: "Describe this picture." }] }],
    options: {},
    addGenerationPrompt: true,
  };
  const times: number[] = [];
  for (let i = 0; i < 2000; i++) {
    const t0 = performance.now();
    const prompt = await pre.prepare(input, {});
    const params = {
      minTokens: 0,
      stop: [],
      stopTokenIds: [],
      ignoreEos: false,
      n: 1,
      beamWidth: 0,
      logprobs: false,
      topLogprobs: 0,
      maxTokens: 1,
    };
    for await (const _ of gpu.generate({ requestId: "x", prompt, params, priority: 0 }, {}));
    times.push(performance.now() - t0);
  }
  // Edge CPU per request without sockets (app.request), the number least disturbed by a busy machine.
  const reqBody = body(1, false);
  const inproc = async () => {
    const r = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: reqBody,
    });
    await r.text();
  };
  for (let i = 0; i < 500; i++) await inproc();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < 2000; i++) await inproc();
  const cpu = process.cpuUsage(cpu0);
  const cpuMsPerRequest = (cpu.user + cpu.system) / 1000 / 2000;
  process.send?.({ port: (srv.address() as AddressInfo).port, fakeP50Ms: pct(times, 50), cpuMsPerRequest });
}

async function client(): Promise<void> {
  const child = fork(new URL(import.meta.url).pathname, [], {
    env: { ...env, BENCH_ROLE: "server" },
    execArgv: ["--import", "tsx"],
  });
  const { port, fakeP50Ms, cpuMsPerRequest } = await new Promise<{
    port: number;
    fakeP50Ms: number;
    cpuMsPerRequest: number;
  }>((r) => child.once("message", (m) => r(m as never)));
  const url = `http://127.0.0.1:${port}/v1/chat/completions`;
  const req = async (maxTokens: number, stream: boolean) => {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: body(maxTokens, stream),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${text}`);
    return text;
  };
  try {
    for (let i = 0; i < 200; i++) await req(1, false); // warm-up (JIT, connection pool)

    const lat: number[] = [];
    for (let i = 0; i < SEQUENTIAL; i++) {
      const t0 = performance.now();
      await req(1, false);
      lat.push(performance.now() - t0);
    }

    let done = 0;
    const until = performance.now() + DURATION_S * 1000;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (performance.now() < until) {
          await req(1, false);
          done++;
        }
      }),
    );
    const rps = done / ((performance.now() - t0) / 1000);

    const time = async (tokens: number, n: number) => {
      const xs: number[] = [];
      for (let i = 0; i < n; i++) {
        const s = performance.now();
        const text = await req(tokens, true);
        xs.push(performance.now() - s);
        if (i === 0 && !text.endsWith("data: [DONE]\n\n")) throw new Error("stream did not end with [DONE]");
      }
      return pct(xs, 50);
    };
    const one = await time(1, 100);
    const many = await time(257, 100);
    const perTokenUs = ((many - one) / 256) * 1000;

    const out = {
      in_process_cpu_ms_per_request: cpuMsPerRequest,
      sequential_requests: SEQUENTIAL,
      latency_ms: { p50: pct(lat, 50), p99: pct(lat, 99) },
      fake_backend_p50_ms: fakeP50Ms,
      added_latency_ms: { p50: pct(lat, 50) - fakeP50Ms, p99: pct(lat, 99) - fakeP50Ms },
      requests_per_s: rps,
      concurrency: CONCURRENCY,
      stream_p50_ms: { tokens_1: one, tokens_257: many },
      sse_overhead_us_per_token: perTokenUs,
    };
    console.log(JSON.stringify(out, (_k, v) => (typeof v === "number" ? Math.round(v * 1000) / 1000 : v), 2));
  } finally {
    child.kill("SIGKILL");
  }
}

if (env.BENCH_ROLE === "server") await server();
else await client();
