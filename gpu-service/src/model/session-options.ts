/**
 * The one place ONNX Runtime session options are built, per session (vision tower, LLM), so thread and
 * spinning settings come from the config in one way.
 *
 * Threads: the engine never runs the two sessions at the same time (one loop: a vision chunk, then an LLM
 * step), so each may use every core while it runs; 0 leaves the count to ONNX Runtime (its physical cores).
 * Spinning (`session.intra_op.allow_spinning`): after an op, ORT's pool threads busy-wait for the next one.
 * That buys a few microseconds between the LLM's small decode kernels, but the spinning threads burn the
 * cores the other session, the Node thread and any process sharing the machine need (the engine switches
 * sessions every step when images and decodes interleave), so it is off unless configured on.
 */

import type * as ort from "onnxruntime-node";

/** Threading of one session. */
export interface SessionThreads {
  /** Intra-op threads; 0 = ONNX Runtime's default (one per physical core). */
  intraOpThreads: number;
  /** Whether idle intra-op threads busy-wait for work. */
  allowSpinning: boolean;
}

/** Session options for one of the runner's sessions. */
export function buildSessionOptions(
  executionProvider: "cpu" | "webgpu" | "cuda",
  threads: SessionThreads,
): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: [executionProvider],
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
    ...(threads.intraOpThreads > 0 ? { intraOpNumThreads: threads.intraOpThreads } : {}),
    // NOTE: the Node binding takes config entries as nested objects of strings (`session.intra_op.allow_spinning`).
    extra: { session: { intra_op: { allow_spinning: threads.allowSpinning ? "1" : "0" } } },
  };
}
