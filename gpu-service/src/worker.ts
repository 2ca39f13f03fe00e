/**
 * The engine in a worker thread. onnxruntime-node's run occupies its thread for the length of a step, so
 * the model and the engine loop live here and the gRPC server (main thread) stays responsive.
 *
 *   main thread                                  worker thread
 *   WorkerEngine.generate ── {add, req} ───────> Engine.add ─ step loop ─ model (ONNX Runtime)
 *        ▲                 ── {abort, id} ─────> Engine.abort
 *        └── EventStream <─ {event, id, ev} ──── emit
 *   WorkerEngine.stats    ── {stats, n} ───────> Engine.stats ─ {stats, n, stats}
 *   WorkerEngine.snapshot <─ {stats, n: -1} ──── every STATS_PUSH_MS between steps (Info never waits on a step)
 *
 * Slice pixels travel as transferred ArrayBuffers (copied once out of the gRPC message first: a view's
 * buffer may be the whole received message, which must not be detached).
 */

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { loadTokenizer } from "@minicpmv/preprocess/tokenizer";
import type { EngineConfig } from "./engine/engine";
import { type EngineHandle, EventStream, LocalEngine } from "./engine/engine-handle";
import type { EngineEvent, EngineModelInfo, EngineRequest, EngineStats, StepRecord } from "./engine/types";
import { Grammars } from "./grammar/grammars";
import { loadModelRunner } from "./load-model";
import type { ModelOptions } from "./model";
import type { ProgressUpdate } from "./progress";

/** What the worker needs to start. */
export interface WorkerOptions {
  model: ModelOptions;
  engine: EngineConfig;
  /** Tracing on: report the steps that ran traced requests to `onStep` (batched, every STEP_FLUSH_MS). */
  traceSteps?: boolean;
}

/** How often the worker sends buffered step records (one message per batch, not per step). */
const STEP_FLUSH_MS = 100;

/** How often the worker pushes its stats unasked (the main thread's snapshot for Info). */
const STATS_PUSH_MS = 100;

type ToWorker =
  | { type: "add"; req: EngineRequest }
  | { type: "abort"; id: string }
  | { type: "stats"; n: number }
  | { type: "close" };

type FromWorker =
  | { type: "ready"; info: EngineModelInfo; stats: EngineStats }
  | { type: "progress"; u: ProgressUpdate }
  | { type: "start_failed"; message: string }
  | { type: "event"; id: string; ev: EngineEvent }
  | { type: "stats"; n: number; stats: EngineStats }
  | { type: "steps"; recs: StepRecord[] }
  | { type: "fatal"; message: string }
  | { type: "closed" };

const MARK = "minicpmv-engine-worker";

/**
 * Worker source that registers tsx and then imports `entry`.
 * NOTE: `execArgv: ["--import", "tsx"]` does not register tsx's loader inside worker threads on Node
 * 20.20 ("Unknown file extension .ts"), so the worker registers it itself through tsx's ESM API.
 */
function bootstrap(entry: string): string {
  const api = createRequire(import.meta.url)
    .resolve("tsx/esm/api")
    .replace(/\.cjs$/, ".mjs");
  return `import(${JSON.stringify(pathToFileURL(api).href)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
}

/** The engine running in a worker thread, seen from the main thread. */
export class WorkerEngine implements EngineHandle {
  onFatal: ((err: Error) => void) | undefined;
  onStep: ((rec: StepRecord) => void) | undefined;
  private readonly streams = new Map<string, EventStream>();
  private readonly statsWaiters = new Map<number, (s: EngineStats) => void>();
  private statsN = 0;
  private closed: Promise<void> | undefined;
  private dead = false;
  private last: EngineStats;

  private constructor(
    private readonly worker: Worker,
    readonly info: EngineModelInfo,
    first: EngineStats,
  ) {
    this.last = first;
    worker.on("message", (m: FromWorker) => this.onMessage(m));
    worker.on("error", (err) => this.fatal(err));
    worker.on("exit", (code) => {
      if (!this.closed) this.fatal(new Error(`the engine worker exited with code ${code}`));
    });
  }

  /** Starts the worker, loads the model (reporting its phases to `onProgress`) and resolves when the engine is ready. */
  static async start(opts: WorkerOptions, onProgress?: (u: ProgressUpdate) => void): Promise<WorkerEngine> {
    const worker = new Worker(bootstrap(import.meta.url), { eval: true, workerData: { [MARK]: true, opts } });
    const ready = await new Promise<{ info: EngineModelInfo; stats: EngineStats }>((resolve, reject) => {
      const onMsg = (m: FromWorker) => {
        if (m.type === "progress") return onProgress?.(m.u);
        if (m.type === "ready") resolve(m);
        else if (m.type === "start_failed") reject(new Error(m.message));
        else return;
        worker.off("message", onMsg);
        worker.off("error", reject);
      };
      worker.on("message", onMsg);
      worker.once("error", reject);
    }).catch(async (err) => {
      await worker.terminate();
      throw err;
    });
    return new WorkerEngine(worker, ready.info, ready.stats);
  }

  generate(req: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    const stream = new EventStream();
    if (this.dead || this.closed) {
      stream.push({ type: "error", kind: "unavailable", message: "the engine is not running" });
      return stream;
    }
    if (signal?.aborted) {
      stream.push({ type: "error", kind: "unavailable", message: "cancelled before it started" });
      return stream;
    }
    // Fresh, tightly sized pixel buffers that can be transferred.
    const transfer: ArrayBuffer[] = [];
    const media = req.prompt.media.map((m) => ({
      ...m,
      slices: m.slices.map((s) => {
        // NOTE: not s.rgb.slice(): on a Node Buffer (what the gRPC decoder hands out) that is a view.
        const rgb = new Uint8Array(s.rgb);
        transfer.push(rgb.buffer as ArrayBuffer);
        return { ...s, rgb };
      }),
    }));
    this.streams.set(req.id, stream);
    this.post({ type: "add", req: { ...req, prompt: { ...req.prompt, media } } }, transfer);
    signal?.addEventListener("abort", () => this.post({ type: "abort", id: req.id }), { once: true });
    return stream;
  }

  stats(): Promise<EngineStats> {
    const n = this.statsN++;
    return new Promise((resolve, reject) => {
      if (this.dead || this.closed) return reject(new Error("the engine is not running"));
      this.statsWaiters.set(n, resolve);
      this.post({ type: "stats", n });
    });
  }

  snapshot(): EngineStats | undefined {
    return this.dead || this.closed ? undefined : this.last;
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      const done = new Promise<void>((resolve) => {
        const onMsg = (m: FromWorker) => {
          if (m.type === "closed") resolve();
        };
        this.worker.on("message", onMsg);
        this.worker.once("exit", () => resolve());
      });
      if (!this.dead) {
        this.post({ type: "close" });
        await done;
      }
      await this.worker.terminate();
      for (const s of this.streams.values())
        s.push({ type: "error", kind: "unavailable", message: "the engine stopped" });
      this.streams.clear();
    })();
    return this.closed;
  }

  private post(m: ToWorker, transfer: ArrayBuffer[] = []): void {
    this.worker.postMessage(m, transfer);
  }

  private onMessage(m: FromWorker): void {
    if (m.type === "event") {
      const s = this.streams.get(m.id);
      if (!s) return;
      s.push(m.ev);
      if (m.ev.type === "final" || m.ev.type === "error") this.streams.delete(m.id);
    } else if (m.type === "stats") {
      this.last = m.stats;
      this.statsWaiters.get(m.n)?.(m.stats);
      this.statsWaiters.delete(m.n);
    } else if (m.type === "steps") {
      if (this.onStep) for (const r of m.recs) this.onStep(r);
    } else if (m.type === "fatal") this.fatal(new Error(m.message));
  }

  private fatal(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    for (const s of this.streams.values()) s.push({ type: "error", kind: "internal", message: err.message });
    this.streams.clear();
    this.onFatal?.(err);
  }
}

/** Worker side: load the model and tokenizer, run the engine loop, answer messages. */
async function workerMain(opts: WorkerOptions): Promise<void> {
  const port = parentPort;
  if (!port) return;
  const send = (m: FromWorker) => port.postMessage(m);
  let local: LocalEngine;
  try {
    const [model, tok] = await Promise.all([
      loadModelRunner(opts.model, (u) => send({ type: "progress", u })),
      loadTokenizer(opts.model.modelDir),
    ]);
    const terminators = opts.engine.terminators ?? tok.terminators;
    // Ids past the tokenizer's vocabulary (padding rows of the model's) can never be part of constrained text.
    const grammars = new Grammars({
      vocabSize: model.info.vocabSize,
      tokenBytes: (id) => (id < tok.vocabSize ? tok.tokenBytes(id) : new Uint8Array()),
      isSpecial: (id) => id >= tok.vocabSize || tok.isSpecial(id),
      terminators,
    });
    local = new LocalEngine(model, tok, { ...opts.engine, terminators }, grammars);
  } catch (err) {
    send({ type: "start_failed", message: err instanceof Error ? err.message : String(err) });
    return;
  }
  local.onFatal = (err) => send({ type: "fatal", message: err.message });
  let flushSteps = () => {};
  if (opts.traceSteps) {
    let recs: StepRecord[] = [];
    let timer: NodeJS.Timeout | undefined;
    flushSteps = () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
      if (recs.length > 0) send({ type: "steps", recs });
      recs = [];
    };
    local.onStep = (rec) => {
      recs.push(rec);
      timer ??= setTimeout(flushSteps, STEP_FLUSH_MS);
    };
  }
  const aborts = new Map<string, AbortController>();
  port.on("message", (m: ToWorker) => {
    if (m.type === "add") {
      const ac = new AbortController();
      aborts.set(m.req.id, ac);
      void (async () => {
        for await (const ev of local.generate(m.req, ac.signal)) send({ type: "event", id: m.req.id, ev });
        aborts.delete(m.req.id);
      })();
    } else if (m.type === "abort") aborts.get(m.id)?.abort();
    else if (m.type === "stats") send({ type: "stats", n: m.n, stats: local.engine.stats() });
    else if (m.type === "close") {
      clearInterval(push);
      void local.close().then(() => {
        flushSteps();
        send({ type: "closed" });
        port.close();
      });
    }
  });
  // Runs between steps only; the main thread keeps the last one it got while a step runs.
  const push = setInterval(() => send({ type: "stats", n: -1, stats: local.engine.stats() }), STATS_PUSH_MS);
  push.unref();
  send({ type: "ready", info: local.info, stats: local.engine.stats() });
}

if (!isMainThread && (workerData as Record<string, unknown> | null)?.[MARK]) {
  void workerMain((workerData as { opts: WorkerOptions }).opts);
}
