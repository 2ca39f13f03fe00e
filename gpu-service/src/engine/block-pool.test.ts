import { describe, expect, it } from "vitest";
import { BlockPool } from "./block-pool";
import { EngineDeadError } from "./types";

describe("BlockPool", () => {
  it("allocates from the head of the free queue and returns null when it does not fit", () => {
    const pool = new BlockPool(6);
    expect(pool.allocate(2)).toEqual([0, 1]);
    expect(pool.allocate(3)).toEqual([2, 3, 4]);
    expect(pool.allocate(2)).toBeNull();
    expect(pool.numFree).toBe(1);
    expect(pool.allocate(1)).toEqual([5]);
    expect(pool.allocate(1)).toBeNull();
    expect(pool.usage).toBe(1);
  });

  it("appends freed blocks to the tail in the order given", () => {
    const pool = new BlockPool(5);
    const a = pool.allocate(3) as number[];
    pool.free([2, 0]);
    expect(pool.freeQueue()).toEqual([3, 4, 2, 0]);
    expect(pool.allocate(3)).toEqual([3, 4, 2]);
    pool.free([a[1] as number]);
    expect(pool.freeQueue()).toEqual([0, 1]);
  });

  it("keeps a block until its last reference is dropped", () => {
    const pool = new BlockPool(3);
    const [b] = pool.allocate(1) as number[];
    pool.touch([b as number]);
    expect(pool.refCount(b as number)).toBe(2);
    pool.free([b as number]);
    expect(pool.freeQueue()).toEqual([1, 2]);
    pool.free([b as number]);
    expect(pool.freeQueue()).toEqual([1, 2, 0]);
    expect(() => pool.free([b as number])).toThrow(EngineDeadError);
  });

  it("revives a free cached block on a hit and evicts cached blocks LRU when allocating", () => {
    const pool = new BlockPool(4);
    const blocks = pool.allocate(3) as number[];
    expect(pool.cacheBlock(0, "h0")).toBe(true);
    expect(pool.cacheBlock(1, "h1")).toBe(true);
    expect(pool.cacheBlock(2, "h0")).toBe(false); // the first holder stays canonical
    pool.free([...blocks].reverse()); // tail first: 2, 1, 0
    expect(pool.freeQueue()).toEqual([3, 2, 1, 0]);
    expect(pool.numCached).toBe(2);
    // A hit on h0 takes block 0 out of the free queue.
    expect(pool.lookup("h0")).toBe(0);
    pool.touch([0]);
    expect(pool.freeQueue()).toEqual([3, 2, 1]);
    // Allocating 3 reaches block 1, which loses its hash (eviction).
    expect(pool.allocate(3)).toEqual([3, 2, 1]);
    expect(pool.lookup("h1")).toBeUndefined();
    expect(pool.lookup("h0")).toBe(0);
    expect(pool.evictions).toBe(1);
  });
});
