/**
 * `npm start`: runs preprocess, gpu-service and edge as three processes on localhost, waits until
 * all three are healthy, prints the URL, and supervises them:
 *
 * - SIGINT (Ctrl-C), SIGTERM and SIGHUP, or the parent (npm) going away, stop the stack in order: the edge
 *   first (it stops accepting, lets streams finish for SHUTDOWN_GRACE_MS, ends the rest with an error event),
 *   then the backends.
 * - A service that exits on its own is restarted with exponential backoff (1 s doubling to 30 s; the count
 *   resets once it has stayed up for a minute); meanwhile the edge's /health reports the gap (503).
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
/** Edge SHUTDOWN_GRACE_MS (and the SIGKILL timer above it). */
const graceMs = Number(env.SHUTDOWN_GRACE_MS ?? 10_000);
/** Restart backoff: first delay, cap, and how long a service must stay up for the count to reset. */
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
const BACKOFF_RESET_MS = 60_000;

interface Service {
  name: string;
  entry: string;
  env: Record<string, string>;
  proc: ChildProcess;
  startedAt: number;
  restarts: number;
  restartTimer?: NodeJS.Timeout;
}
const children: Service[] = [];
let stopping = false;
/** Stops a download in progress; `stop()` waits for it to wind down (files closed, lock released). */
const downloadAbort = new AbortController();
let preparing: Promise<unknown> = Promise.resolve();

function log(msg: string, extra: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), service: "start", msg, ...extra }));
}

function spawnService(svc: Omit<Service, "proc" | "startedAt">): ChildProcess {
  const proc = spawn(process.execPath, ["--import", "tsx", join(root, svc.entry)], {
    cwd: root,
    env: { ...env, ...svc.env },
    stdio: ["ignore", "inherit", "inherit"],
  });
  proc.on("exit", (code, signal) => onExit(svc.name, proc, code, signal));
  return proc;
}

function run(name: string, entry: string, childEnv: Record<string, string>): void {
  const svc = { name, entry, env: childEnv, restarts: 0 };
  children.push({ ...svc, proc: spawnService(svc), startedAt: Date.now() });
}

/** A service exited: unless the stack is stopping, restart it after a backoff. */
function onExit(name: string, proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
  const svc = children.find((c) => c.name === name);
  if (stopping || !svc || svc.proc !== proc) return;
  if (Date.now() - svc.startedAt > BACKOFF_RESET_MS) svc.restarts = 0;
  const delayMs = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** svc.restarts);
  svc.restarts++;
  log("a service exited unexpectedly; restarting it", {
    service_name: name,
    code,
    signal,
    restart: svc.restarts,
    delay_ms: delayMs,
  });
  svc.restartTimer = setTimeout(() => {
    if (stopping) return;
    svc.proc = spawnService(svc);
    svc.startedAt = Date.now();
    log("restarted", { service_name: name, pid: svc.proc.pid });
  }, delayMs);
}

function terminate(proc: ChildProcess, killAfterMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), killAfterMs);
    proc.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    proc.kill("SIGTERM");
  });
}

async function stop(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  downloadAbort.abort();
  await preparing.catch(() => {});
  for (const c of children) clearTimeout(c.restartTimer);
  // The edge first: it drains its streams while the backends still serve them; then the backends.
  const edge = children.filter((c) => c.name === "edge");
  await Promise.all(edge.map((c) => terminate(c.proc, graceMs + 15_000)));
  await Promise.all(children.filter((c) => c.name !== "edge").map((c) => terminate(c.proc, 15_000)));
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
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, () => void stop(0));
  // NOTE: npm may exit on SIGTERM without passing it on (its shell does not forward it); this process then
  // becomes an orphan. Its parent changing is the same request to stop.
  const parent = process.ppid;
  const watch = setInterval(() => {
    if (process.ppid !== parent) {
      log("the parent process went away; stopping the stack");
      void stop(0);
    }
  }, 1000);
  watch.unref();
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
