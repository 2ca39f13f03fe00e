/**
 * Starts the real services as child processes on loopback (the tiny-a checkpoint by default), for
 * cross-service tests: one preprocess, N gpu-service replicas, one edge.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createClient } from "@minicpmv/proto/grpc";
import { Health, ServingStatus } from "@minicpmv/proto/health";
import { expect } from "vitest";
import { ensureTinyCheckpoint } from "../../gpu-service/src/checkpoint";
import { alive, freePorts } from "./ports";

const root = join(import.meta.dirname, "../..");

/** One started service process with its captured output. */
export interface ServiceProc {
  name: string;
  proc: ChildProcess;
  port: number;
  metricsPort?: number;
  output(): string;
}

/** A running stack. */
export interface Stack {
  edgeUrl: string;
  preprocess: ServiceProc;
  gpus: ServiceProc[];
  edge: ServiceProc;
  modelDir: string;
  /** SIGTERM to everything still running; resolves when all have exited. */
  stop(): Promise<void>;
}

/** Options for {@link startStack}. */
export interface StackOptions {
  gpuReplicas?: number;
  env?: Record<string, string>;
  gpuEnv?: Record<string, string>;
  /** Per-replica settings, merged over `gpuEnv` for replica i. */
  gpuEnvs?: Record<string, string>[];
  edgeEnv?: Record<string, string>;
  preprocessEnv?: Record<string, string>;
  startTimeoutMs?: number;
}

/** Spawns one service entry point (`<pkg>/src/main.ts`) with `env`. */
export function spawnService(name: string, entry: string, port: number, env: Record<string, string>): ServiceProc {
  const proc = spawn(process.execPath, ["--import", "tsx", join(root, entry)], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-20_000);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  return { name, proc, port, output: () => out };
}

/** Waits until a gRPC server reports SERVING. */
export async function waitServing(svc: ServiceProc, timeoutMs: number): Promise<void> {
  const client = createClient(Health, `127.0.0.1:${svc.port}`);
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      if (svc.proc.exitCode !== null) throw new Error(`${svc.name} exited early:\n${svc.output()}`);
      try {
        if ((await client.check({ service: "" }, { deadline: 2000 })).status === ServingStatus.SERVING) return;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${svc.name} not serving after ${timeoutMs} ms:\n${svc.output()}`);
  } finally {
    client.close();
  }
}

/** Waits until an HTTP URL answers 200. */
export async function waitHttp(url: string, svc: ServiceProc, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (svc.proc.exitCode !== null) throw new Error(`${svc.name} exited early:\n${svc.output()}`);
    try {
      if ((await fetch(url, { signal: AbortSignal.timeout(2000) })).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} not healthy after ${timeoutMs} ms:\n${svc.output()}`);
}

/** Sends SIGTERM (then SIGKILL after `graceMs`) and resolves the exit code. */
export function stopProc(svc: ServiceProc, graceMs = 20_000): Promise<number | null> {
  const { proc } = svc;
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    proc.kill("SIGTERM");
  });
}

/** Starts gpu-service replica(s) only. */
export async function startGpu(modelDir: string, env: Record<string, string> = {}): Promise<ServiceProc> {
  const [port, metricsPort] = await freePorts(2);
  const svc = spawnService(`gpu-service:${port}`, "gpu-service/src/main.ts", port as number, {
    MODEL_DIR: modelDir,
    GPU_SERVICE_HOST: "127.0.0.1",
    GPU_SERVICE_PORT: String(port),
    GPU_METRICS_PORT: String(metricsPort),
    ...env,
  });
  svc.metricsPort = metricsPort as number;
  return svc;
}

/** Starts preprocess, `gpuReplicas` gpu-services and an edge, and waits until all are healthy. */
export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const timeout = opts.startTimeoutMs ?? 240_000;
  const modelDir = await ensureTinyCheckpoint();
  const [prePort, preMetrics, edgePort] = (await freePorts(3)) as [number, number, number];
  const preprocess = spawnService("preprocess", "preprocess/src/main.ts", prePort, {
    MODEL_DIR: modelDir,
    PREPROCESS_HOST: "127.0.0.1",
    PREPROCESS_PORT: String(prePort),
    PREPROCESS_METRICS_PORT: String(preMetrics),
    ...opts.env,
    ...opts.preprocessEnv,
  });
  preprocess.metricsPort = preMetrics;
  const gpus: ServiceProc[] = [];
  for (let i = 0; i < (opts.gpuReplicas ?? 1); i++)
    gpus.push(await startGpu(modelDir, { ...opts.env, ...opts.gpuEnv, ...opts.gpuEnvs?.[i] }));
  const all = [preprocess, ...gpus];
  try {
    await Promise.all(all.map((s) => waitServing(s, timeout)));
  } catch (err) {
    await Promise.all(all.map((s) => stopProc(s, 2000)));
    throw err;
  }
  const edge = spawnService("edge", "edge/src/main.ts", edgePort, {
    HOST: "127.0.0.1",
    PORT: String(edgePort),
    PREPROCESS_URL: `127.0.0.1:${prePort}`,
    GPU_SERVICE_URLS: gpus.map((g) => `127.0.0.1:${g.port}`).join(","),
    GPU_METRICS_URLS: gpus.map((g) => `http://127.0.0.1:${g.metricsPort}/metrics`).join(","),
    GPU_POLL_INTERVAL_MS: "200",
    ...opts.env,
    ...opts.edgeEnv,
  });
  const edgeUrl = `http://127.0.0.1:${edgePort}`;
  try {
    await waitHttp(`${edgeUrl}/health`, edge, timeout);
  } catch (err) {
    await Promise.all([...all, edge].map((s) => stopProc(s, 2000)));
    throw err;
  }
  return {
    edgeUrl,
    preprocess,
    gpus,
    edge,
    modelDir,
    stop: async () => {
      await stopProc(edge);
      await Promise.all(all.map((s) => stopProc(s)));
    },
  };
}

/** Stops every process of `stack` (when it started) and asserts that none is left running. */
export async function stopStackChecked(stack: Stack | undefined): Promise<void> {
  if (!stack) return;
  const procs = [stack.edge, stack.preprocess, ...stack.gpus];
  await stack.stop();
  for (const p of procs) expect(alive(p.proc.pid as number), `${p.name} still running`).toBe(false);
}
