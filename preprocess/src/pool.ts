/**
 * Runs media tasks (decode + slice + hash) off the event loop, on a fixed set of worker threads, so
 * one large image does not stall other requests. With 0 workers the tasks run inline.
 *
 *   prepare() ──run(task)──► queue ──► idle worker ──postMessage──► processMedia() ──► slices (transferred)
 *
 * Two queues: still images go before video frames, so a few long videos cannot starve the images of other
 * requests; together they hold at most `maxQueued` tasks (MEDIA_QUEUE_MAX), past which a task is refused as
 * capacity (RESOURCE_EXHAUSTED, 429) instead of waiting without end.
 */

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { abortError, exhausted, PreprocessError, type PreprocessErrorKind } from "./errors";
import { type MediaTask, processMedia, type SlicedMedia } from "./media";

/** Something that runs media tasks. */
export interface MediaRunner {
  /** Processes one task; rejects with a PreprocessError (cancelled when `signal` aborts). */
  run(task: MediaTask, signal?: AbortSignal): Promise<SlicedMedia>;
  /** Stops the workers; pending tasks are rejected. */
  close(): Promise<void>;
}

/** Runs tasks on the calling thread (tests, small tools). */
export class InlineRunner implements MediaRunner {
  async run(task: MediaTask, signal?: AbortSignal): Promise<SlicedMedia> {
    if (signal?.aborted) throw abortError(signal);
    const out = await processMedia(task);
    if (signal?.aborted) throw abortError(signal);
    return out;
  }
  async close(): Promise<void> {}
}

interface Job {
  id: number;
  task: MediaTask;
  transfer: ArrayBuffer[];
  resolve: (r: SlicedMedia) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
}

type Reply =
  | { id: number; ok: true; result: SlicedMedia }
  | { id: number; ok: false; error: { kind: PreprocessErrorKind; message: string } };

/**
 * Worker source: registers tsx in the worker, then loads media-worker.ts.
 * NOTE: `execArgv: ["--import", "tsx"]` does not reach a worker's entry module on Node 20, so the
 * loader is registered from an eval'd bootstrap instead.
 */
function bootstrap(): string {
  const api = createRequire(import.meta.url)
    .resolve("tsx/esm/api")
    .replace(/\.cjs$/, ".mjs");
  const entry = new URL("./media-worker.ts", import.meta.url).href;
  return `import(${JSON.stringify(pathToFileURL(api).href)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
}

/** A fixed-size pool of worker threads. */
export class WorkerPool implements MediaRunner {
  private readonly slots: Slot[] = [];
  /** Still images (encoded tasks): served first. */
  private readonly queue: Job[] = [];
  /** Video frames (decoded RGB tasks). */
  private readonly frames: Job[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    readonly size: number,
    /** Most tasks waiting for a worker (both queues). */
    readonly maxQueued = Number.POSITIVE_INFINITY,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`worker pool size must be >= 1, got ${size}`);
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  /** Tasks waiting for a worker. */
  get queued(): number {
    return this.queue.length + this.frames.length;
  }

  run(task: MediaTask, signal?: AbortSignal): Promise<SlicedMedia> {
    if (this.closed) return Promise.reject(new PreprocessError("unavailable", "the media worker pool is closed"));
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.queued >= this.maxQueued) {
      return Promise.reject(exhausted(`the media queue is full (${this.maxQueued} tasks waiting); retry later`));
    }
    // NOTE: copy encoded bytes that are views into a larger buffer (a whole gRPC request):
    // structured clone would otherwise copy the entire underlying buffer into the worker.
    // Uint8Array.prototype.slice copies even for a Buffer, whose own slice() is a view: transferring a view's
    // buffer would detach the whole gRPC request (and every other image in it).
    let t = task;
    const transfer: ArrayBuffer[] = [];
    if (t.kind === "encoded") {
      const bytes = Uint8Array.prototype.slice.call(t.bytes);
      transfer.push(bytes.buffer);
      t = { ...t, bytes };
    } else {
      const data =
        t.image.data.byteOffset === 0 && t.image.data.byteLength === t.image.data.buffer.byteLength
          ? t.image.data
          : Uint8Array.prototype.slice.call(t.image.data);
      transfer.push(data.buffer as ArrayBuffer);
      t = { ...t, image: { ...t.image, data } };
    }
    return new Promise<SlicedMedia>((resolve, reject) => {
      const job: Job = {
        id: this.nextId++,
        task: t,
        transfer,
        resolve,
        reject,
        signal,
        onAbort: () => {
          for (const q of [this.queue, this.frames]) {
            const i = q.indexOf(job);
            if (i >= 0) q.splice(i, 1);
          }
          // A running task cannot be interrupted; its result is dropped when it arrives.
          reject(abortError(signal as AbortSignal));
        },
      };
      signal?.addEventListener("abort", job.onAbort, { once: true });
      (t.kind === "encoded" ? this.queue : this.frames).push(job);
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const job of [...this.queue.splice(0), ...this.frames.splice(0)])
      this.finish(job, new PreprocessError("unavailable", "pool closed"));
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.job) this.finish(s.job, new PreprocessError("unavailable", "pool closed"));
        s.job = undefined;
        await s.worker.terminate();
      }),
    );
  }

  private spawn(): Slot {
    const worker = new Worker(bootstrap(), { eval: true });
    worker.unref();
    const slot: Slot = { worker, job: undefined };
    worker.on("message", (msg: Reply) => {
      const job = slot.job;
      slot.job = undefined;
      worker.unref();
      if (job && job.id === msg.id) {
        if (msg.ok) this.finish(job, undefined, msg.result);
        else this.finish(job, new PreprocessError(msg.error.kind, msg.error.message));
      }
      this.dispatch();
    });
    const replace = (why: string) => {
      if (this.closed) return;
      const job = slot.job;
      slot.job = undefined;
      if (job) this.finish(job, new PreprocessError("internal", `media worker failed: ${why}`));
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots[i] = this.spawn();
      this.dispatch();
    };
    worker.on("error", (err) => replace(err.message));
    worker.on("exit", (code) => replace(`exited with code ${code}`));
    return slot;
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.job) continue;
      const job = this.queue.shift() ?? this.frames.shift();
      if (!job) return;
      slot.job = job;
      slot.worker.ref();
      slot.worker.postMessage({ id: job.id, task: job.task }, job.transfer);
    }
  }

  private finish(job: Job, err: unknown, result?: SlicedMedia): void {
    job.signal?.removeEventListener("abort", job.onAbort);
    if (err !== undefined) job.reject(err);
    else job.resolve(result as SlicedMedia);
  }
}

/** A pool of `workers` threads, or an inline runner for 0. */
export function createMediaRunner(workers: number, maxQueued?: number): MediaRunner {
  return workers > 0 ? new WorkerPool(workers, maxQueued) : new InlineRunner();
}
