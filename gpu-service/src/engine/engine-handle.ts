/**
 * How the server talks to an engine: submit a request, read its events as an async stream, cancel by
 * aborting a signal. `LocalEngine` runs the engine loop on the calling thread (benchmarks, tests);
 * `WorkerEngine` (../worker.ts) runs it in a worker thread so a model step never blocks the gRPC server.
 */

import { Engine, type EngineConfig } from "./engine";
import {
  type Constraint,
  type EngineEvent,
  type EngineModel,
  type EngineModelInfo,
  type EngineRequest,
  type EngineStats,
  RequestError,
  type StepRecord,
  type StructuredSpec,
  type TokenBytes,
} from "./types";

/** Compiles structured-output specs (gpu-service/src/grammar `Grammars`). */
export interface GrammarCompiler {
  compile(spec: StructuredSpec): Promise<Constraint>;
}

/** A running engine, wherever it runs. */
export interface EngineHandle {
  readonly info: EngineModelInfo;
  /**
   * Submits a request and streams its events (`final` last). Aborting `signal` cancels it (it ends with
   * finish reason abort). A refused request yields a single `error` event.
   */
  generate(req: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent>;
  /** Current counters and gauges. */
  stats(): Promise<EngineStats>;
  /**
   * The latest counters and gauges this thread already holds (never waits for the engine's thread), or
   * undefined when the engine is not running. Info and health answer from it: a busy engine is not a dead one.
   */
  snapshot?(): EngineStats | undefined;
  /** Called once if the engine dies. */
  onFatal: ((err: Error) => void) | undefined;
  /**
   * Tracing on: receives the steps that ran traced requests (possibly batched, shortly after they ran).
   * Steps are recorded only while it is set (WorkerEngine: only when started with `traceSteps`).
   */
  onStep: ((rec: StepRecord) => void) | undefined;
  /** Ends all requests (abort), stops the loop and releases the model. */
  close(): Promise<void>;
}

/** A push/pull queue of events that ends after `final` or `error`. */
export class EventStream implements AsyncIterable<EngineEvent> {
  private readonly buf: EngineEvent[] = [];
  private wake: (() => void) | undefined;
  private ended = false;

  push(ev: EngineEvent): void {
    if (this.ended) return;
    this.buf.push(ev);
    if (ev.type === "final" || ev.type === "error") this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<EngineEvent> {
    for (;;) {
      const ev = this.buf.shift();
      if (ev !== undefined) {
        yield ev;
        if (ev.type === "final" || ev.type === "error") return;
        continue;
      }
      await new Promise<void>((r) => {
        this.wake = r;
      });
      this.wake = undefined;
    }
  }
}

/** Submits to an in-thread `Engine`, turning refusals into `error` events. */
export function submit(engine: Engine, req: EngineRequest, stream: EventStream): void {
  try {
    engine.add(req, (ev) => stream.push(ev));
  } catch (err) {
    if (err instanceof RequestError) stream.push({ type: "error", kind: err.kind, message: err.message });
    else throw err;
  }
}

/** The engine loop on the calling thread. */
export class LocalEngine implements EngineHandle {
  readonly engine: Engine;
  onFatal: ((err: Error) => void) | undefined;
  private readonly loop: Promise<void>;

  constructor(
    private readonly model: EngineModel,
    tok: TokenBytes,
    config: EngineConfig,
    /** Without it, a request with `params.structured` is refused. */
    private readonly grammars?: GrammarCompiler,
  ) {
    this.engine = new Engine(model, tok, config);
    this.engine.onFatal = (err) => this.onFatal?.(err);
    this.loop = this.engine.run().catch(() => {});
  }

  get info(): EngineModelInfo {
    return this.model.info;
  }

  get onStep(): ((rec: StepRecord) => void) | undefined {
    return this.engine.onStep;
  }

  set onStep(fn: ((rec: StepRecord) => void) | undefined) {
    this.engine.onStep = fn;
  }

  generate(req: EngineRequest, signal?: AbortSignal): AsyncIterable<EngineEvent> {
    const stream = new EventStream();
    if (signal?.aborted) {
      stream.push({ type: "error", kind: "unavailable", message: "cancelled before it started" });
      return stream;
    }
    const spec = req.params.structured;
    if (!spec) {
      submit(this.engine, req, stream);
      signal?.addEventListener("abort", () => this.engine.abort(req.id), { once: true });
      return stream;
    }
    // The grammar compiles before admission (cached per spec): the engine never waits on a compile.
    void this.compileThenSubmit(req, spec, stream, signal);
    return stream;
  }

  private async compileThenSubmit(
    req: EngineRequest,
    spec: StructuredSpec,
    stream: EventStream,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    let constraint: Constraint;
    try {
      if (!this.grammars) throw new RequestError("invalid_argument", "params.structured: not supported by this engine");
      constraint = await this.grammars.compile(spec);
    } catch (err) {
      const e = err instanceof RequestError ? err : new RequestError("internal", `grammar: ${String(err)}`);
      stream.push({ type: "error", kind: e.kind, message: e.message });
      return;
    }
    if (signal?.aborted) {
      stream.push({ type: "error", kind: "unavailable", message: "cancelled before it started" });
      return;
    }
    submit(this.engine, { ...req, constraint }, stream);
    signal?.addEventListener("abort", () => this.engine.abort(req.id), { once: true });
  }

  async stats(): Promise<EngineStats> {
    return this.engine.stats();
  }

  snapshot(): EngineStats | undefined {
    return this.engine.stats();
  }

  async close(): Promise<void> {
    this.engine.stop(true);
    await this.loop;
    await this.model.dispose();
  }
}
