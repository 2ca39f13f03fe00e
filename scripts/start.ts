/**
 * `npm start`: runs preprocess, gpu-service and edge as three processes on localhost, waits until
 * all three are healthy, prints the URL, and on Ctrl-C (SIGINT) or SIGTERM stops all three.
 *
 *   start.ts ──spawn──> preprocess  (gRPC :PREPROCESS_PORT)
 *            ──spawn──> gpu-service (gRPC :GPU_SERVICE_PORT, metrics :GPU_METRICS_PORT)
 *            ──spawn──> edge        (HTTP :PORT)  ──> both backends
 *
 * With MODEL_DIR the services read that directory. Else with MODEL_ID (e.g. openbmb/MiniCPM-V-2_6) the
 * checkpoint is first downloaded from the Hugging Face Hub into .cache/hub/ (HF_TOKEN, HF_ENDPOINT,
 * MODEL_REVISION; Ctrl-C stops the download and a later start resumes it). Else the tiny-a checkpoint is
 * generated once into .cache/ and served (random weights). See scripts/model-dir.ts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createClient } from "@minicpmv/proto/grpc";
import { Health, ServingStatus } from "@minicpmv/proto/health";
import { fromHubProgress, ProgressReporter } from "../gpu-service/src/progress";
import { isAbortedDownload, resolveModelDir } from "./model-dir";

const root = join(import.meta.dirname, "..");
const env = process.env;
const host = "127.0.0.1";
const ports = {
  preprocess: Number(env.PREPROCESS_PORT ?? 50061),
  gpu: Number(env.GPU_SERVICE_PORT ?? 50062),
  gpuMetrics: Number(env.GPU_METRICS_PORT ?? 9462),
  edge: Number(env.PORT ?? 8080),
};
const startTimeoutMs = Number(env.START_TIMEOUT_MS ?? 600_000);
const children: { name: string; proc: ChildProcess }[] = [];
let stopping = false;
/** Stops a download in progress; `stop()` waits for it to wind down (files closed, lock released). */
const downloadAbort = new AbortController();
let preparing: Promise<unknown> = Promise.resolve();

function log(msg: string, extra: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), service: "start", msg, ...extra }));
}

function run(name: string, entry: string, childEnv: Record<string, string>): void {
  const proc = spawn(process.execPath, ["--import", "tsx", join(root, entry)], {
    cwd: root,
    env: { ...env, ...childEnv },
    stdio: ["ignore", "inherit", "inherit"],
  });
  children.push({ name, proc });
  proc.on("exit", (code, signal) => {
    if (!stopping) {
      log("a service exited unexpectedly; stopping the stack", { service_name: name, code, signal });
      void stop(1);
    }
  });
}

async function stop(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  downloadAbort.abort();
  await preparing.catch(() => {});
  const alive = children.filter((c) => c.proc.exitCode === null && c.proc.signalCode === null);
  await Promise.all(
    alive.map(
      ({ proc }) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
          proc.once("exit", () => {
            clearTimeout(timer);
            resolve();
          });
          proc.kill("SIGTERM");
        }),
    ),
  );
  log("stopped", { exit_code: exitCode });
  process.exit(exitCode);
}

async function waitGrpc(name: string, address: string, deadline: number): Promise<void> {
  const client = createClient(Health, address);
  try {
    while (Date.now() < deadline && !stopping) {
      try {
        const res = await client.check({ service: "" }, { deadline: 2000 });
        if (res.status === ServingStatus.SERVING) return;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`${name} at ${address} did not become healthy in ${startTimeoutMs} ms`);
  } finally {
    client.close();
  }
}

async function waitHttp(url: string, deadline: number): Promise<void> {
  while (Date.now() < deadline && !stopping) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} did not become healthy in ${startTimeoutMs} ms`);
}

/** Download progress: bars on a terminal, else a JSON line per file now and then. */
const downloads = new ProgressReporter({ logger: { info: (obj, msg) => log(msg, obj) } });

async function main(): Promise<void> {
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));
  const resolving = resolveModelDir(env, {
    signal: downloadAbort.signal,
    onProgress: (p) => {
      const u = fromHubProgress(p);
      if (u) downloads.update(u);
    },
  });
  preparing = resolving;
  const { dir: modelDir, source } = await resolving.finally(() => downloads.stop());
  if (source.kind === "tiny") {
    log("MODEL_DIR and MODEL_ID are not set: serving the tiny-a checkpoint (random weights; answers are noise)");
  } else if (source.kind === "hub") {
    log("downloaded", { model_id: source.options.repo, revision: source.options.revision, dir: modelDir });
  }
  if (stopping) return;
  const common = { MODEL_DIR: modelDir };
  run("preprocess", "preprocess/src/main.ts", {
    ...common,
    PREPROCESS_HOST: host,
    PREPROCESS_PORT: String(ports.preprocess),
  });
  run("gpu-service", "gpu-service/src/main.ts", {
    ...common,
    GPU_SERVICE_HOST: host,
    GPU_SERVICE_PORT: String(ports.gpu),
    GPU_METRICS_PORT: String(ports.gpuMetrics),
  });
  run("edge", "edge/src/main.ts", {
    PORT: String(ports.edge),
    PREPROCESS_URL: `${host}:${ports.preprocess}`,
    GPU_SERVICE_URLS: `${host}:${ports.gpu}`,
    GPU_METRICS_URLS: `http://${host}:${ports.gpuMetrics}/metrics`,
  });
  const deadline = Date.now() + startTimeoutMs;
  await Promise.all([
    waitGrpc("preprocess", `${host}:${ports.preprocess}`, deadline),
    waitGrpc("gpu-service", `${host}:${ports.gpu}`, deadline),
  ]);
  const url = `http://localhost:${ports.edge}`;
  await waitHttp(`${url}/health`, deadline);
  log("ready", { url, pids: Object.fromEntries(children.map((c) => [c.name, c.proc.pid])) });
  console.log(`\n  MiniCPM-V 2.6 is up: open ${url}/  (OpenAI API at ${url}/v1)\n  Ctrl-C stops all three services.\n`);
}

main().catch((err: unknown) => {
  if (isAbortedDownload(err)) {
    log("download stopped; run again to resume it");
    return;
  }
  log("start failed", { error: err instanceof Error ? err.message : String(err) });
  void stop(1);
});
