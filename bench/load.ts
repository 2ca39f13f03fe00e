/**
 * A bounded load against the real stack (preprocess, gpu-service and edge as processes on loopback, tiny-a
 * unless MODEL_DIR is set), with clients that go away at random. Prints the requests sent, the outcomes by
 * status, false 503s (nothing is ever down during the run, so every 503 is one), p50/p99 latency, and the
 * KV blocks in use, live ffmpeg children and each service's RSS before and after (leaks show there).
 *
 *   npx tsx bench/load.ts            LOAD_REQUESTS=200 LOAD_CONCURRENCY=16 LOAD_DISCONNECT=0.2 LOAD_SEED=1
 *
 * Request mix: streamed chat (50%), plain chat (20%), chat with an image (10%), chat with a 2 s MP4 (10%),
 * a completions batch of 4 prompts (10%). A disconnecting client aborts after 0-800 ms.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GenerationService } from "@minicpmv/proto";
import { createClient } from "@minicpmv/proto/grpc";
import { ensureTinyCheckpoint } from "../gpu-service/src/checkpoint";
import { freePorts } from "../test/helpers/ports";
import { lcg } from "./common";

const env = process.env;
const REQUESTS = Number(env.LOAD_REQUESTS ?? 200);
const CONCURRENCY = Number(env.LOAD_CONCURRENCY ?? 16);
const DISCONNECT = Number(env.LOAD_DISCONNECT ?? 0.2);
const rand = lcg(Number(env.LOAD_SEED ?? 1));
const root = join(import.meta.dirname, "..");

interface Proc {
  name: string;
  proc: ChildProcess;
  out: string;
}

function start(name: string, entry: string, childEnv: Record<string, string>): Proc {
  const p: Proc = {
    name,
    proc: spawn(process.execPath, ["--import", "tsx", join(root, entry)], {
      cwd: root,
      env: { ...env, LOG_LEVEL: "warn", ...childEnv },
      stdio: ["ignore", "pipe", "pipe"],
    }),
    out: "",
  };
  const keep = (d: Buffer) => {
    p.out = (p.out + d.toString()).slice(-20_000);
  };
  p.proc.stdout?.on("data", keep);
  p.proc.stderr?.on("data", keep);
  return p;
}

function rssMiB(pid: number | undefined): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

function ffmpegChildren(pid: number | undefined): number {
  try {
    return execFileSync("ps", ["-o", "comm=", "--ppid", String(pid)], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.includes("ffmpeg")).length;
  } catch {
    return 0; // ps exits 1 when there are no children
  }
}

function mp4(seconds: number): string {
  const ffmpeg = (createRequire(import.meta.url)("@ffmpeg-installer/ffmpeg") as { path: string }).path;
  const dir = mkdtempSync(join(tmpdir(), "bench-load-"));
  try {
    const out = join(dir, "clip.mp4");
    execFileSync(ffmpeg, [
      ...["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=4"],
      ...["-t", String(seconds), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-y", out],
    ]);
    return `data:video/mp4;base64,${readFileSync(out).toString("base64")}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// A 64x48 grey PNG (made once with sharp through the preprocess workspace).
async function png(): Promise<string> {
  const { default: sharp } = await import("sharp");
  const buf = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#777" } })
    .png()
    .toBuffer();
  return `data:image/png;base64,${buf.toString("base64")}`;
}

type Outcome = { kind: "status"; status: number; ms: number; streamError?: number } | { kind: "disconnected" };

async function main(): Promise<void> {
  const modelDir = env.MODEL_DIR || (await ensureTinyCheckpoint());
  const [prePort, gpuPort, gpuMetrics, edgePort] = (await freePorts(4)) as [number, number, number, number];
  const pre = start("preprocess", "preprocess/src/main.ts", {
    MODEL_DIR: modelDir,
    PREPROCESS_PORT: String(prePort),
    PREPROCESS_METRICS_PORT: "0",
  });
  const gpu = start("gpu-service", "gpu-service/src/main.ts", {
    MODEL_DIR: modelDir,
    GPU_SERVICE_PORT: String(gpuPort),
    GPU_METRICS_PORT: String(gpuMetrics),
  });
  const edge = start("edge", "edge/src/main.ts", {
    HOST: "127.0.0.1",
    PORT: String(edgePort),
    PREPROCESS_URL: `127.0.0.1:${prePort}`,
    GPU_SERVICE_URLS: `127.0.0.1:${gpuPort}`,
  });
  const all = [pre, gpu, edge];
  const url = `http://127.0.0.1:${edgePort}`;
  const info = createClient(GenerationService, `127.0.0.1:${gpuPort}`);
  try {
    const deadline = Date.now() + 300_000;
    for (;;) {
      for (const p of all) if (p.proc.exitCode !== null) throw new Error(`${p.name} exited:\n${p.out}`);
      const ok = await fetch(`${url}/health`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error("the stack did not become healthy");
      await new Promise((r) => setTimeout(r, 500));
    }
    const image = await png();
    const video = mp4(2);
    const snapshot = async () => ({
      kvUsedBlocks: (await info.info({}, { deadline: 5000 })).kvUsedBlocks,
      ffmpeg: ffmpegChildren(pre.proc.pid),
      rss: Object.fromEntries(all.map((p) => [p.name, rssMiB(p.proc.pid)])),
    });
    // Warm-up (first image, video and prompt paths), then the "before" figures.
    await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "warm up" }], max_tokens: 4 }),
    });
    const before = await snapshot();

    const body = (k: number): { path: string; body: unknown; stream: boolean } => {
      const r = rand();
      const messages = (content: unknown) => [{ role: "user", content }];
      if (r < 0.5)
        return {
          path: "/v1/chat/completions",
          stream: true,
          body: { messages: messages(`stream ${k}`), max_tokens: 48, ignore_eos: true, stream: true },
        };
      if (r < 0.7)
        return {
          path: "/v1/chat/completions",
          stream: false,
          body: { messages: messages(`plain ${k}`), max_tokens: 16 },
        };
      if (r < 0.8)
        return {
          path: "/v1/chat/completions",
          stream: false,
          body: {
            messages: messages([
              { type: "image_url", image_url: { url: image } },
              { type: "text", text: "what?" },
            ]),
            max_tokens: 8,
          },
        };
      if (r < 0.9)
        return {
          path: "/v1/chat/completions",
          stream: true,
          body: {
            messages: messages([
              { type: "video_url", video_url: { url: video } },
              { type: "text", text: "what?" },
            ]),
            max_tokens: 8,
            stream: true,
          },
        };
      return { path: "/v1/completions", stream: false, body: { prompt: ["a", "b", "c", "d"], max_tokens: 8 } };
    };

    const one = async (k: number): Promise<Outcome> => {
      const req = body(k);
      const ac = new AbortController();
      const leave = rand() < DISCONNECT;
      const timer = leave ? setTimeout(() => ac.abort(), rand() * 800) : undefined;
      const t0 = performance.now();
      try {
        const res = await fetch(`${url}${req.path}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(req.body),
          signal: ac.signal,
        });
        const text = await res.text();
        const ms = performance.now() - t0;
        const err = /"error":\{[^}]*"code":(\d+)/.exec(text);
        return {
          kind: "status",
          status: res.status,
          ms,
          ...(res.status === 200 && err ? { streamError: Number(err[1]) } : {}),
        };
      } catch (e) {
        if (ac.signal.aborted) return { kind: "disconnected" };
        throw e;
      } finally {
        clearTimeout(timer);
      }
    };

    const outcomes: Outcome[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < REQUESTS) outcomes.push(await one(next++));
      }),
    );
    const wallS = (performance.now() - t0) / 1000;
    // Let cancelled work wind down (KV blocks are freed before the next engine step).
    await new Promise((r) => setTimeout(r, 3000));
    const after = await snapshot();

    const byStatus = new Map<string, number>();
    const lat: number[] = [];
    let disconnected = 0;
    for (const o of outcomes) {
      if (o.kind === "disconnected") {
        disconnected++;
        continue;
      }
      const key = o.streamError ? `200+error event ${o.streamError}` : String(o.status);
      byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
      if (o.status === 200 && !o.streamError) lat.push(o.ms);
    }
    lat.sort((a, b) => a - b);
    const pct = (p: number) =>
      lat.length ? (lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] as number) : 0;
    const false503 = outcomes.filter((o) => o.kind === "status" && (o.status === 503 || o.streamError === 503)).length;
    const fmtRss = (r: Record<string, number>) =>
      Object.entries(r)
        .map(([k, v]) => `${k} ${v.toFixed(0)} MiB`)
        .join(", ");
    console.log(
      `bench/load: ${REQUESTS} requests, concurrency ${CONCURRENCY}, disconnect rate ${DISCONNECT}, ${wallS.toFixed(1)} s`,
    );
    console.log(`  requests:        ${outcomes.length} (${disconnected} disconnected by the client)`);
    console.log(
      `  by status:       ${[...byStatus.entries()]
        .sort()
        .map(([k, v]) => `${k}: ${v}`)
        .join(", ")}`,
    );
    console.log(
      `  errors:          ${outcomes.filter((o) => o.kind === "status" && (o.status !== 200 || o.streamError)).length}`,
    );
    console.log(`  false 503s:      ${false503}`);
    console.log(`  latency (ok):    p50 ${pct(50).toFixed(0)} ms, p99 ${pct(99).toFixed(0)} ms (n=${lat.length})`);
    console.log(`  KV blocks used:  before ${before.kvUsedBlocks}, after ${after.kvUsedBlocks}`);
    console.log(`  ffmpeg children: before ${before.ffmpeg}, after ${after.ffmpeg}`);
    console.log(`  RSS before:      ${fmtRss(before.rss)}`);
    console.log(`  RSS after:       ${fmtRss(after.rss)}`);
  } finally {
    info.close();
    for (const p of all) if (p.proc.exitCode === null) p.proc.kill("SIGTERM");
    await Promise.all(
      all.map((p) => (p.proc.exitCode === null ? new Promise((r) => p.proc.once("exit", r)) : undefined)),
    );
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
