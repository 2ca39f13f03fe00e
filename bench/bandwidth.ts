/**
 * Read-bandwidth bounds for decode, measured in the same run as the decode they bound:
 *  - `ortStreamBandwidth`: an ONNX Runtime graph that only reads `bytes` of f32 initializers (ReduceSum of
 *    each [rows, 4096] chunk over its last axis, parallel over rows) with the same thread count as the LLM;
 *  - `plainReadBandwidth`: `threads` worker threads each scan their share of `bytes` with memchr
 *    (`Buffer.indexOf` of a byte that is not there): a plain read, nothing written, no JS loop.
 * Both stream buffers far larger than the caches; the result is the median over `reps` passes.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import { ModelBuilder } from "../gpu-service/src/model/graph-builder";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const COLS = 4096;
const CHUNK_ROWS = 4096; // 64 MiB per initializer

/** Bytes per second ORT reads when a graph does nothing but stream `bytes` of weights. */
export async function ortStreamBandwidth(bytes: number, threads: number, reps = 5): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "bw-stream-"));
  try {
    const m = new ModelBuilder("stream", { externalDataPath: join(dir, "stream.weights") });
    const g = m.graph;
    let left = Math.ceil(bytes / 4 / COLS); // rows
    const sums: string[] = [];
    let i = 0;
    while (left > 0) {
      const rows = Math.min(CHUNK_ROWS, left);
      const data = new Float32Array(rows * COLS);
      for (let j = 0; j < data.length; j += 97) data[j] = (j % 13) - 6;
      const w = g.init(`w${i++}`, "float32", [rows, COLS], data);
      sums.push(g.op("ReduceSum", [w, g.i64([1])], { keepdims: 0 }));
      left -= rows;
    }
    g.output(g.op("Concat", sums, { axis: 0 }), "sums", "float32", ["R"]);
    const path = join(dir, "stream.onnx");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(path, m.finish());
    // NOTE: constant folding would turn the whole graph into a constant; disable it.
    const s = await ort.InferenceSession.create(path, {
      graphOptimizationLevel: "disabled",
      intraOpNumThreads: threads,
      logSeverityLevel: 3,
    });
    try {
      await s.run({});
      const times: number[] = [];
      for (let r = 0; r < reps; r++) {
        const t0 = performance.now();
        await s.run({});
        times.push(performance.now() - t0);
      }
      return (Math.ceil(bytes / 4 / COLS) * COLS * 4) / (median(times) / 1000);
    } finally {
      await s.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const buf = Buffer.alloc(workerData.bytes, 7); // touched: no shared zero pages
const view = new Int32Array(workerData.sab);
buf.indexOf(1);
Atomics.add(view, 0, 1);
while (Atomics.load(view, 1) === 0) Atomics.wait(view, 1, 0, 5);
const t = [];
for (let r = 0; r < workerData.reps; r++) {
  const t0 = performance.now();
  if (buf.indexOf(1) !== -1) throw new Error("unexpected byte");
  t.push(performance.now() - t0);
}
parentPort.postMessage(t);
`;

/** Bytes per second `threads` threads read together (memchr over their own share of `bytes`). */
export async function plainReadBandwidth(bytes: number, threads: number, reps = 5): Promise<number> {
  const per = Math.ceil(bytes / threads);
  const sab = new SharedArrayBuffer(8);
  const view = new Int32Array(sab);
  const workers = Array.from(
    { length: threads },
    () => new Worker(WORKER, { eval: true, workerData: { bytes: per, reps, sab } }),
  );
  const results = workers.map(
    (w) =>
      new Promise<number[]>((resolve, reject) => {
        w.once("message", resolve);
        w.once("error", reject);
      }),
  );
  while (Atomics.load(view, 0) < threads) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(view, 1, 1);
  Atomics.notify(view, 1);
  const times = await Promise.all(results);
  await Promise.all(workers.map((w) => w.terminate()));
  // each pass: all threads read their share at once; the slowest thread sets the pass time
  const pass = Array.from({ length: reps }, (_, r) => Math.max(...times.map((t) => t[r] as number)));
  return (per * threads) / (median(pass) / 1000);
}
