import { describe, expect, it } from "vitest";
import { loadConfig } from "./config";
import { buildSessionOptions } from "./model/session-options";

describe("gpu-service config: cores", () => {
  it("defaults to ONNX Runtime's thread counts, no spinning and one vision slice per step", () => {
    const c = loadConfig({});
    expect([c.intraOpThreads, c.visionThreads, c.llmThreads]).toEqual([0, 0, 0]);
    expect([c.visionSpinning, c.llmSpinning, c.visionSlicesPerStep]).toEqual([false, false, 1]);
  });

  it("reads per-session threads and spinning, and names a bad variable", () => {
    const c = loadConfig({
      VISION_THREADS: "1",
      LLM_THREADS: "2",
      LLM_ALLOW_SPINNING: "true",
      VISION_SLICES_PER_STEP: "3",
    });
    expect([c.visionThreads, c.llmThreads, c.llmSpinning, c.visionSlicesPerStep]).toEqual([1, 2, true, 3]);
    expect(() => loadConfig({ VISION_SLICES_PER_STEP: "0" })).toThrow(
      'VISION_SLICES_PER_STEP must be an integer >= 1, got "0"',
    );
    expect(() => loadConfig({ LLM_THREADS: "-1" })).toThrow("LLM_THREADS must be an integer >= 0");
    expect(() => loadConfig({ VISION_ALLOW_SPINNING: "maybe" })).toThrow("VISION_ALLOW_SPINNING must be true or false");
  });

  it("builds session options with the thread count and ORT's allow_spinning entry", () => {
    expect(buildSessionOptions("cpu", { intraOpThreads: 1, allowSpinning: false })).toMatchObject({
      executionProviders: ["cpu"],
      intraOpNumThreads: 1,
      extra: { session: { intra_op: { allow_spinning: "0" } } },
    });
    const dflt = buildSessionOptions("cpu", { intraOpThreads: 0, allowSpinning: true });
    expect(dflt.intraOpNumThreads).toBeUndefined();
    expect(dflt.extra).toEqual({ session: { intra_op: { allow_spinning: "1" } } });
  });
});
