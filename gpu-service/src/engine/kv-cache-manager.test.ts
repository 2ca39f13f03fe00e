import { describe, expect, it } from "vitest";
import { BlockPool } from "./block-pool";
import { KVCacheManager, type KvSeq, type MediaSpan } from "./kv-cache-manager";

function seq(tokens: number[], mediaSpans: MediaSpan[] = []): KvSeq {
  return { tokens, mediaSpans, blockTable: [], blockHashes: [], numComputed: 0, numCachedBlocks: 0 };
}

/** Prefill a fresh sequence completely (as schedule + update would). */
function prefill(kv: KVCacheManager, s: KvSeq) {
  const pre = kv.findCachedPrefix(s);
  const copies = kv.allocateSlots(s, s.tokens.length - pre.numTokens, pre);
  if (copies === null) throw new Error("does not fit");
  s.numComputed = s.tokens.length;
  kv.cacheFullBlocks(s);
  return pre;
}

const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

describe("KVCacheManager", () => {
  it("allocates block tables and frees them tail first", () => {
    const kv = new KVCacheManager(new BlockPool(8), 4);
    const a = seq(range(0, 10)); // 3 blocks
    expect(kv.allocateSlots(a, 10)).toEqual([]);
    expect(a.blockTable).toEqual([0, 1, 2]);
    a.numComputed = 10;
    // Decode: positions 10, 11 fit in block 2; position 12 needs a new block.
    a.tokens.push(50, 51, 52);
    expect(kv.allocateSlots(a, 1)).toEqual([]);
    expect(a.blockTable).toEqual([0, 1, 2]);
    a.numComputed = 12;
    kv.allocateSlots(a, 1);
    expect(a.blockTable).toEqual([0, 1, 2, 3]);
    kv.free(a);
    expect(kv.pool.freeQueue()).toEqual([4, 5, 6, 7, 3, 2, 1, 0]);
  });

  it("returns null and changes nothing when the pool is too small", () => {
    const kv = new KVCacheManager(new BlockPool(2), 4);
    const a = seq(range(0, 9));
    expect(kv.allocateSlots(a, 9)).toBeNull();
    expect(a.blockTable).toEqual([]);
    expect(kv.pool.numFree).toBe(2);
  });

  it("shares full prompt blocks across requests and leaves the last token to compute", () => {
    const kv = new KVCacheManager(new BlockPool(10), 4);
    const a = seq(range(100, 110)); // blocks of 4: [100..103] [104..107] [108,109]
    expect(prefill(kv, a)).toEqual({ blocks: [], numTokens: 0 });
    expect(a.blockTable).toEqual([0, 1, 2]);
    // Same first 8 tokens, then diverges.
    const b = seq([...range(100, 108), 7, 7, 7]);
    const hit = prefill(kv, b);
    expect(hit).toEqual({ blocks: [0, 1], numTokens: 8 });
    expect(b.blockTable).toEqual([0, 1, 3]);
    expect(kv.pool.refCount(0)).toBe(2);
    // An identical 8-token prompt: only 1 block hits, the last token must be computed for logits.
    const c = seq(range(100, 108));
    expect(prefill(kv, c)).toEqual({ blocks: [0], numTokens: 4 });
    expect(c.blockTable).toEqual([0, 4]);
    // After all finish, the cached blocks survive in the free queue and hit again.
    kv.free(a);
    kv.free(b);
    kv.free(c);
    const d = seq(range(100, 112));
    expect(prefill(kv, d)).toEqual({ blocks: [0, 1], numTokens: 8 });
  });

  it("never shares KV between different images with identical placeholder ids", () => {
    const kv = new KVCacheManager(new BlockPool(12), 4);
    const ids = [1, 2, ...Array(8).fill(128244), 3, 4, 5];
    const img = (h: string): MediaSpan[] => [{ start: 2, end: 10, key: `${h}:0` }];
    const a = seq([...ids], img("aaaa"));
    prefill(kv, a);
    expect(a.blockTable).toEqual([0, 1, 2, 3]);
    const b = seq([...ids], img("bbbb"));
    // Block 0 holds tokens 0..3 which include image positions 2,3: no hit at all.
    expect(prefill(kv, b)).toEqual({ blocks: [], numTokens: 0 });
    expect(b.blockTable).toEqual([4, 5, 6, 7]);
    const c = seq([...ids], img("aaaa"));
    expect(prefill(kv, c)).toEqual({ blocks: [0, 1, 2], numTokens: 12 });
    // Same text-only prefix still hits across images when it ends before the image.
    const d = seq([1, 2, 9, 9, 9, 9], []);
    const e = seq([1, 2, 9, 9, 8], []);
    prefill(kv, d);
    expect(prefill(kv, e)).toEqual({ blocks: [d.blockTable[0]], numTokens: 4 });
  });

  it("copies a shared partial block before a fork writes to it (copy-on-write)", () => {
    const kv = new KVCacheManager(new BlockPool(8), 4);
    const p = seq(range(0, 6)); // blocks [0..3] [4,5,_,_]
    prefill(kv, p);
    expect(p.blockTable).toEqual([0, 1]);
    const c = seq([...p.tokens]);
    kv.fork(p, c);
    expect(c.blockTable).toEqual([0, 1]);
    expect(kv.pool.refCount(1)).toBe(2);
    p.tokens.push(60);
    c.tokens.push(61);
    // The parent writes position 6 into shared block 1: it gets a copy, the child keeps block 1.
    expect(kv.allocateSlots(p, 1)).toEqual([{ src: 1, dst: 2 }]);
    expect(p.blockTable).toEqual([0, 2]);
    expect(kv.pool.refCount(1)).toBe(1);
    // Now the child is the only holder of block 1: no copy.
    expect(kv.allocateSlots(c, 1)).toEqual([]);
    expect(c.blockTable).toEqual([0, 1]);
    expect(kv.pool.refCount(0)).toBe(2);
    kv.free(p);
    kv.free(c);
    expect(kv.pool.numFree).toBe(8);
  });

  it("evicts the least recently freed cached blocks first", () => {
    const kv = new KVCacheManager(new BlockPool(4), 2);
    const a = seq([1, 2, 3, 4, 5]); // blocks 0,1 full, 2 partial
    prefill(kv, a);
    kv.free(a); // free order 2, 1, 0
    expect(kv.pool.freeQueue()).toEqual([3, 2, 1, 0]);
    const b = seq([9, 9, 9, 9, 9]);
    prefill(kv, b); // takes 3, 2, 1: block 1 (hash of [3,4]) is evicted
    expect(b.blockTable).toEqual([3, 2, 1]);
    const c = seq([1, 2, 3, 4, 5]);
    expect(kv.findCachedPrefix(c)).toEqual({ blocks: [0], numTokens: 2 });
  });
});
