import { describe, expect, it } from "vitest";
import type { EngineHandle } from "./engine/engine-handle";
import type { EngineStats } from "./engine/types";
import { generationService } from "./service";

const stats = (over: Partial<EngineStats> = {}): EngineStats => ({
  running: 0,
  waiting: 0,
  kvTotalBlocks: 100,
  kvUsedBlocks: 0,
  kvCachedBlocks: 0,
  kvUsage: 0,
  prefixCacheQueries: 0,
  prefixCacheHits: 0,
  encoderCacheQueries: 0,
  encoderCacheHits: 0,
  encoderCacheBytes: 0,
  preemptions: 0,
  steps: 0,
  promptTokensComputed: 0,
  generationTokens: 0,
  ...over,
});

/** An engine whose thread is busy in a long step: `stats()` never answers, `snapshot()` holds the last known. */
function busyEngine(snapshot: EngineStats | undefined): EngineHandle {
  return {
    info: {
      modelName: "tiny-a",
      contextLength: 32768,
      blockSize: 16,
      numBlocks: 100,
      queryNum: 64,
    } as EngineHandle["info"],
    generate: () => {
      throw new Error("not used");
    },
    stats: () => new Promise<EngineStats>(() => {}),
    snapshot: () => snapshot,
    onFatal: undefined,
    onStep: undefined,
    close: async () => {},
  };
}

describe("Info answers from what the gRPC thread holds", () => {
  it("answers at once while the engine's thread is busy, with the last known load", async () => {
    const svc = generationService(busyEngine(stats({ running: 7, waiting: 3, kvUsedBlocks: 42 })), { maxN: 8 });
    const info = await (svc.info as (req: unknown, ctx: unknown) => Promise<Record<string, unknown>>)({}, {});
    expect(info).toMatchObject({ ready: true, running: 7, queueDepth: 3, kvUsedBlocks: 42, kvCapacityBlocks: 100 });
  });

  it("says not ready when the engine is not running", async () => {
    const svc = generationService(busyEngine(undefined), { maxN: 8 });
    const info = await (svc.info as (req: unknown, ctx: unknown) => Promise<Record<string, unknown>>)({}, {});
    expect(info.ready).toBe(false);
  });
});
