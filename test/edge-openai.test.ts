/**
 * The edge against the official `openai` npm client, unmodified, over real HTTP and real gRPC.
 *
 * NOTE: this is the edge's own test over real sockets: the backends are scripted gRPC servers
 * (test/helpers/fake-backends.ts) behind the edge's real gRPC clients, so edge behaviour that depends on exact backend
 * answers (metadata, cancellation, mid-stream failures) is deterministic. The same client against the real stack
 * with tiny-a is test/openai-stack.test.ts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../edge/src/app";
import { GrpcGenerationBackend } from "../edge/src/backends/generation-client";
import { GpuPool } from "../edge/src/backends/gpu-pool";
import { GrpcPreprocessBackend } from "../edge/src/backends/preprocess-client";
import { loadConfig } from "../edge/src/config";
import { type FakeServer, startFakeGpu, startFakePreprocess } from "./helpers/fake-backends";
import { alive, freePorts } from "./helpers/ports";

interface Edge {
  url: string;
  pool: GpuPool;
  close(): Promise<void>;
}

async function startEdge(preprocessPort: number, gpuPorts: number[], env: Record<string, string> = {}): Promise<Edge> {
  const config = loadConfig({
    PREPROCESS_URL: `127.0.0.1:${preprocessPort}`,
    GPU_SERVICE_URLS: gpuPorts.map((p) => `127.0.0.1:${p}`).join(","),
    ...env,
  });
  const preprocess = new GrpcPreprocessBackend(config.preprocessUrl, config.grpcMaxMessageBytes);
  const gpus = config.gpuServiceUrls.map((u) => new GrpcGenerationBackend(u, config.grpcMaxMessageBytes));
  const pool = new GpuPool(gpus);
  const app = createApp({ config, preprocess, pool, webPage: false });
  pool.start(config.gpuPollIntervalMs);
  const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }) as Server;
  await new Promise<void>((r) => server.once("listening", () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    pool,
    async close() {
      pool.stop();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      preprocess.close();
      for (const g of gpus) g.close();
    },
  };
}

const M = "openbmb/MiniCPM-V-2_6";
const png = `data:image/png;base64,${Buffer.from("not really a png").toString("base64")}`;

describe("edge with the openai client", () => {
  let pre: FakeServer;
  let gpu: FakeServer;
  let edge: Edge;
  let client: OpenAI;

  beforeAll(async () => {
    pre = await startFakePreprocess();
    gpu = await startFakeGpu();
    edge = await startEdge(pre.port, [gpu.port], { API_KEYS: "sk-test" });
    client = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: "sk-test", maxRetries: 0 });
  });

  afterAll(async () => {
    await edge.close();
    await pre.stop();
    await gpu.stop();
  });

  it("answers a non-streaming request", async () => {
    const r = await client.chat.completions.create({
      model: M,
      messages: [{ role: "user", content: "say something" }],
      max_tokens: 3,
    });
    expect(r.object).toBe("chat.completion");
    expect(r.choices[0]?.message).toMatchObject({ role: "assistant", content: "w0 w1 w2 " });
    expect(r.choices[0]?.finish_reason).toBe("length");
    expect(r.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
  });

  it("streams with usage and passes x-request-id to both backends", async () => {
    const stream = await client.chat.completions.create(
      {
        model: M,
        messages: [{ role: "user", content: "stream please" }],
        max_tokens: 2,
        stream: true,
        stream_options: { include_usage: true },
      },
      { headers: { "x-request-id": "rid-stream-1" } },
    );
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    let chunks = 0;
    for await (const ch of stream) {
      chunks++;
      text += ch.choices[0]?.delta.content ?? "";
      if (ch.usage) usage = ch.usage;
    }
    expect(text).toBe("w0 w1 ");
    expect(chunks).toBe(5); // role, 2 deltas, finish, usage
    expect(usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 });
    expect(pre.seen.at(-1)).toEqual({ requestId: "rid-stream-1", metadataId: "rid-stream-1" });
    expect(gpu.seen.at(-1)).toEqual({ requestId: "rid-stream-1", metadataId: "rid-stream-1" });
  });

  it("counts one image by data URL, and two images", async () => {
    const one = await client.chat.completions.create({
      model: M,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: png } },
            { type: "text", text: "what" },
          ],
        },
      ],
    });
    expect(one.usage?.prompt_tokens_details).toMatchObject({ image_tokens: 66 });
    const two = await client.chat.completions.create({
      model: M,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: png } },
            { type: "image_url", image_url: { url: png } },
            { type: "text", text: "compare" },
          ],
        },
      ],
    });
    expect(two.usage?.prompt_tokens_details).toEqual({
      cached_tokens: 0,
      text_tokens: 6,
      image_tokens: 132,
      video_tokens: 0,
    });
  });

  it("accepts a video as vLLM's pre-sampled frames", async () => {
    const frame = Buffer.from("jpeg frame").toString("base64");
    const r = await client.chat.completions.create({
      model: M,
      messages: [
        {
          role: "user",
          // video_url is a vLLM extension the openai types do not know.
          content: [
            { type: "video_url", video_url: { url: `data:video/jpeg;base64,${frame},${frame},${frame}` } },
            { type: "text", text: "describe" },
          ] as unknown as OpenAI.ChatCompletionContentPart[],
        },
      ],
    });
    expect(r.usage?.prompt_tokens_details).toMatchObject({ video_tokens: 3 * 66 });
  });

  it("returns logprobs and n=2", async () => {
    const r = await client.chat.completions.create({
      model: M,
      messages: [{ role: "user", content: "hi" }],
      n: 2,
      max_tokens: 1,
      logprobs: true,
      top_logprobs: 1,
    });
    expect(r.choices.map((c) => c.message.content)).toEqual(["w0 ", "w1 "]);
    expect(r.choices[1]?.logprobs?.content).toEqual([
      {
        token: "w1 ",
        logprob: -0.5,
        bytes: [119, 49, 32],
        top_logprobs: [{ token: "w1 ", logprob: -0.5, bytes: [119, 49, 32] }],
      },
    ]);
  });

  it("is reproducible with a seed", async () => {
    const ask = (seed: number) =>
      client.chat.completions.create({ model: M, messages: [{ role: "user", content: "hi" }], seed, max_tokens: 3 });
    const [a, b, c] = await Promise.all([ask(42), ask(42), ask(43)]);
    expect(a.choices[0]?.message.content).toBe(b.choices[0]?.message.content);
    expect(a.choices[0]?.message.content).not.toBe(c.choices[0]?.message.content);
  });

  it("surfaces errors as the client's typed errors", async () => {
    const bad = client.chat.completions.create({
      model: M,
      messages: [{ role: "user", content: "x" }],
      temperature: 5,
    });
    await expect(bad).rejects.toMatchObject({ status: 400, param: "temperature" });
    await expect(bad).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    const wrongKey = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    await expect(wrongKey.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("lists the model, reports health, metrics and render", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["openbmb/MiniCPM-V-2_6"]);
    const health = await fetch(`${edge.url}/health`);
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`${edge.url}/metrics`)).text();
    expect(metrics).toMatch(
      /edge_http_requests_total\{method="POST",route="\/v1\/chat\/completions",status="200"\} \d+/,
    );
    const render = await fetch(`${edge.url}/v1/chat/completions/render`, {
      method: "POST",
      headers: { authorization: "Bearer sk-test", "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: png } }] }] }),
    });
    expect(await render.json()).toMatchObject({ prompt_tokens: 5 + 66, media: [{ type: "image", slices: 1 }] });
  });

  it("cancels the gRPC call when the client aborts a stream", async () => {
    const before = gpu.cancelled;
    const stream = await client.chat.completions.create(
      { model: M, messages: [{ role: "user", content: "long" }], stream: true },
      { headers: { "x-request-id": "hang-1" } },
    );
    for await (const ch of stream) {
      if (ch.choices[0]?.delta.content) break; // leaving the loop aborts the HTTP request
    }
    await expect.poll(() => gpu.cancelled, { timeout: 10_000 }).toBe(before + 1);
  });
});

describe("edge with two gpu-service processes, one killed mid-run", () => {
  const procs: ChildProcess[] = [];
  let pre: FakeServer;
  let edge: Edge;

  async function spawnGpu(port: number, env: Record<string, string>): Promise<ChildProcess> {
    const p = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "helpers/fake-backends.ts")], {
      env: { ...process.env, FAKE_ROLE: "gpu", FAKE_PORT: String(port), ...env },
      stdio: ["ignore", "pipe", "inherit"],
    });
    procs.push(p);
    await new Promise<void>((resolve, reject) => {
      p.stdout?.on("data", (d: Buffer) => {
        if (d.toString().includes('"ready"')) resolve();
      });
      p.once("exit", (code) => reject(new Error(`fake gpu exited with ${code}`)));
    });
    return p;
  }

  afterAll(async () => {
    await edge?.close();
    await pre?.stop();
    for (const p of procs) if (p.pid && alive(p.pid)) p.kill("SIGKILL");
  });

  it("retries requests that had no token yet, ends started streams with an error event, and nothing hangs", async () => {
    const [portA, portB] = (await freePorts(2)) as [number, number];
    // A takes the traffic (B reports a long queue); B ignores the hold/hang steering and just answers.
    const a = await spawnGpu(portA, {});
    await spawnGpu(portB, { FAKE_QUEUE_DEPTH: "10", FAKE_IGNORE_STEERING: "1" });
    pre = await startFakePreprocess();
    edge = await startEdge(pre.port, [portA, portB], { GPU_POLL_INTERVAL_MS: "200", REQUEST_TIMEOUT_MS: "60000" });
    await edge.pool.poll();
    const client = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: "none", maxRetries: 0 });

    // A stream that has produced a token on A, and a request that A holds before its first token.
    const stream = await client.chat.completions.create(
      { model: M, messages: [{ role: "user", content: "streaming" }], stream: true },
      { headers: { "x-request-id": "hang-2" } },
    );
    const it = stream[Symbol.asyncIterator]();
    let started = "";
    while (!started) started = (await it.next()).value?.choices[0]?.delta.content ?? "";
    const held = client.chat.completions.create(
      { model: M, messages: [{ role: "user", content: "waiting" }], max_tokens: 2 },
      { headers: { "x-request-id": "hold-2" } },
    );
    await expect.poll(() => edge.pool.replicas[0]?.inflight).toBe(2);
    expect(edge.pool.replicas[1]?.inflight).toBe(0);

    a.kill("SIGKILL");

    // The held request is retried on B and succeeds.
    const r = await held;
    expect(r.choices[0]?.message.content).toBe("w0 w1 ");
    // The started stream ends with an error event (the openai client raises it), then the stream closes.
    await expect(
      (async () => {
        for (let x = await it.next(); !x.done; x = await it.next());
      })(),
    ).rejects.toThrow(/gpu-service 127\.0\.0\.1:\d+/);
    // The dead replica is ejected once its failures (the broken calls, then failed polls) come in a row.
    await expect.poll(() => edge.pool.replicas[0]?.healthy, { timeout: 60_000, interval: 200 }).toBe(false);
    // New requests go to B.
    const after = await client.chat.completions.create({
      model: M,
      messages: [{ role: "user", content: "next" }],
      max_tokens: 1,
    });
    expect(after.choices[0]?.message.content).toBe("w0 ");
    expect(started).toBe("w0 ");
  });
});
