import { describe, expect, it } from "vitest";
import { BlockPool } from "./block-pool";
import { KVCacheManager } from "./kv-cache-manager";
import { type SchedGroup, type SchedSeq, Scheduler } from "./scheduler";

let ids = 0;
function group(id: string, prompt: number[], priority = 0, arrival = ids++): SchedGroup {
  const seq: SchedSeq = {
    seqId: ids++,
    tokens: [...prompt],
    mediaSpans: [],
    blockTable: [],
    blockHashes: [],
    numComputed: 0,
    numCachedBlocks: 0,
  };
  return { id, priority, arrival, seqs: [seq], preemptions: 0 };
}

const range = (a: number, n: number) => Array.from({ length: n }, (_, i) => a + i);

function setup(numBlocks: number, blockSize: number, maxBatchTokens: number, maxWaiting = 10, maxRunning = 8) {
  const kv = new KVCacheManager(new BlockPool(numBlocks), blockSize);
  return new Scheduler(kv, { maxBatchTokens, maxRunning, maxWaiting });
}

/** Runs one step: schedule, "execute" (append token 7 to each sequence that got logits), update. */
function step(s: Scheduler) {
  const out = s.schedule();
  s.update(out);
  for (const e of out.scheduled) if (e.wantLogits) e.seq.tokens.push(7);
  return out;
}

const plan = (out: ReturnType<Scheduler["schedule"]>) => out.scheduled.map((e) => [e.group.id, e.start, e.numNew]);

describe("Scheduler", () => {
  it("chunks a long prefill around running decodes, decodes first", () => {
    const s = setup(32, 4, 8);
    const a = group("a", range(0, 5));
    s.add(a);
    expect(plan(step(s))).toEqual([["a", 0, 5]]);
    s.add(group("b", range(100, 20)));
    // a decodes (1 token), b gets the rest of the budget.
    expect(plan(step(s))).toEqual([
      ["a", 5, 1],
      ["b", 0, 7],
    ]);
    expect(plan(step(s))).toEqual([
      ["a", 6, 1],
      ["b", 7, 7],
    ]);
    const out = step(s);
    expect(plan(out)).toEqual([
      ["a", 7, 1],
      ["b", 14, 6],
    ]);
    expect(out.scheduled.map((e) => e.wantLogits)).toEqual([true, true]);
    expect(plan(step(s))).toEqual([
      ["a", 8, 1],
      ["b", 20, 1],
    ]);
  });

  it("admits waiting requests by priority, then arrival", () => {
    const s = setup(32, 4, 4);
    s.add(group("late-low", [1, 2, 3], 5));
    s.add(group("high", [1, 2, 3], -1));
    s.add(group("low", [1, 2, 3], 5, -100));
    expect(s.waiting.map((g) => g.id)).toEqual(["high", "low", "late-low"]);
    expect(plan(step(s))).toEqual([
      ["high", 0, 3],
      ["low", 0, 1],
    ]);
  });

  it("refuses requests when the waiting queue is full", () => {
    const s = setup(32, 4, 4, 2);
    expect(s.add(group("a", [1]))).toBe(true);
    expect(s.add(group("b", [1]))).toBe(true);
    expect(s.add(group("c", [1]))).toBe(false);
  });

  it("preempts the lowest-priority latest request when blocks run out, then resumes it", () => {
    // 4 blocks of 2 tokens. a (prio 0) and b (prio 1) each hold 2 blocks after prefill.
    const s = setup(4, 2, 16);
    const a = group("a", [1, 2, 3], 0);
    const b = group("b", [4, 5, 6], 1);
    s.add(a);
    s.add(b);
    expect(plan(step(s))).toEqual([
      ["a", 0, 3],
      ["b", 0, 3],
    ]);
    expect(s.kv.pool.numFree).toBe(0);
    // Both decode into their partial block 1 (position 3): fits.
    expect(plan(step(s))).toEqual([
      ["a", 3, 1],
      ["b", 3, 1],
    ]);
    // Position 4 needs a third block each: b is preempted so a can grow.
    const out = step(s);
    expect(plan(out)).toEqual([["a", 4, 1]]);
    expect(out.preempted.map((g) => g.id)).toEqual(["b"]);
    expect(b.seqs[0]?.blockTable).toEqual([]);
    expect(b.seqs[0]?.tokens).toEqual([4, 5, 6, 7, 7]); // generated tokens are kept
    expect(s.waiting.map((g) => g.id)).toEqual(["b"]);
    expect(s.preemptions).toBe(1);
    // b waits while a runs; once a finishes, b recomputes prompt + generated tokens (prefix cache hits
    // the full block [4,5] it computed before).
    s.finish(a);
    const resumed = step(s);
    expect(plan(resumed)).toEqual([["b", 2, 3]]);
    expect(resumed.scheduled[0]?.cachedTokens).toBe(2);
  });

  it("fails a request that cannot fit even alone instead of looping", () => {
    const s = setup(2, 2, 16);
    const a = group("a", [1, 2, 3]);
    s.add(a);
    step(s); // 2 blocks
    step(s); // position 3 fits
    const out = step(s); // position 4 needs a third block
    expect(out.failed.map((f) => f.group.id)).toEqual(["a"]);
    expect(out.failed[0]?.message).toContain("2 blocks of 2 tokens");
    expect(s.kv.pool.numFree).toBe(2);
  });

  describe("priority preemption of running requests", () => {
    const ids = (gs: readonly SchedGroup[]) => gs.map((g) => g.id);

    it("preempts a lower-priority request at the running limit, then resumes it", () => {
      const s = setup(32, 4, 16, 10, 1);
      const low = group("low", [1, 2, 3], 5);
      s.add(low);
      expect(plan(step(s))).toEqual([["low", 0, 3]]);
      expect(plan(step(s))).toEqual([["low", 3, 1]]);
      const high = group("high", [10, 11], 0);
      s.add(high);
      const out = step(s);
      expect(plan(out)).toEqual([["high", 0, 2]]);
      expect(ids(out.preempted)).toEqual(["low"]);
      expect(ids(out.admitted)).toEqual(["high"]);
      expect(ids(s.running)).toEqual(["high"]);
      expect(ids(s.waiting)).toEqual(["low"]);
      expect(low.preemptions).toBe(1);
      expect(s.preemptions).toBe(1);
      expect(low.seqs[0]?.blockTable).toEqual([]);
      expect(low.seqs[0]?.tokens).toEqual([1, 2, 3, 7, 7]);
      // low waits while high runs (it may not displace a higher-priority request).
      const next = step(s);
      expect(plan(next)).toEqual([["high", 2, 1]]);
      expect(next.preempted).toEqual([]);
      s.finish(high);
      // low recomputes, adopting its cached first block [1, 2, 3, 7].
      const resumed = step(s);
      expect(plan(resumed)).toEqual([["low", 4, 1]]);
      expect(resumed.scheduled[0]?.cachedTokens).toBe(4);
      expect(resumed.admitted).toEqual([]); // admitted once, at its first start
      expect(s.preemptions).toBe(1);
    });

    it("never preempts for an equal priority (running limit or blocks)", () => {
      const byLimit = setup(32, 4, 16, 10, 1);
      byLimit.add(group("a", [1, 2, 3], 2));
      step(byLimit);
      byLimit.add(group("b", [4, 5, 6], 2));
      for (let i = 0; i < 3; i++) {
        const out = step(byLimit);
        expect(plan(out)).toEqual([["a", 3 + i, 1]]);
        expect(out.preempted).toEqual([]);
      }
      expect(ids(byLimit.waiting)).toEqual(["b"]);

      const byBlocks = setup(2, 2, 16);
      byBlocks.add(group("a", [1, 2, 3], 2));
      step(byBlocks);
      byBlocks.add(group("b", [4], 2));
      const out = step(byBlocks);
      expect(plan(out)).toEqual([["a", 3, 1]]);
      expect(out.preempted).toEqual([]);
      expect(ids(byBlocks.waiting)).toEqual(["b"]);
      expect(byBlocks.preemptions).toBe(0);
    });

    it("frees only the lowest-priority request's blocks that a higher one needs", () => {
      // 6 blocks of 4 tokens. mid holds block [0], low [1, 2, 3, 4, 5]: none free.
      const s = setup(6, 4, 32);
      const mid = group("mid", [1, 2, 3], 3);
      const low = group("low", range(20, 18), 5);
      s.add(mid);
      s.add(low);
      expect(plan(step(s))).toEqual([
        ["mid", 0, 3],
        ["low", 0, 18],
      ]);
      expect(mid.seqs[0]?.blockTable).toEqual([0]);
      expect(low.seqs[0]?.blockTable).toEqual([1, 2, 3, 4, 5]);
      expect(s.kv.pool.numFree).toBe(0);
      const high = group("high", [10, 11, 12], 0);
      s.add(high);
      // Both decodes fit their blocks; high needs 1 block: low (lowest priority) is preempted, mid stays.
      const out = step(s);
      expect(plan(out)).toEqual([
        ["mid", 3, 1],
        ["high", 0, 3],
      ]);
      expect(ids(out.preempted)).toEqual(["low"]);
      expect(ids(out.admitted)).toEqual(["high"]);
      expect(out.numTokens).toBe(4);
      // low's blocks were freed tail first (5, 4, 3, 2, 1); high took the head of the free queue.
      expect(high.seqs[0]?.blockTable).toEqual([5]);
      expect(mid.seqs[0]?.blockTable).toEqual([0]);
      expect(low.seqs[0]?.blockTable).toEqual([]);
      expect(ids(s.running)).toEqual(["high", "mid"]);
      expect(ids(s.waiting)).toEqual(["low"]);
      expect(s.kv.pool.numFree).toBe(4);
    });

    it("preempts nothing for a request that would not fit even with every lower one gone", () => {
      // 4 blocks of 2 tokens: keep (same priority as high) and low hold 2 each; high needs 3.
      const s = setup(4, 2, 16);
      s.add(group("keep", [1, 2, 3], 0));
      s.add(group("low", [4, 5, 6], 5));
      step(s);
      s.add(group("high", [7, 8, 9, 10, 11], 0));
      const out = step(s);
      expect(plan(out)).toEqual([
        ["keep", 3, 1],
        ["low", 3, 1],
      ]);
      expect(out.preempted).toEqual([]);
      expect(ids(s.running)).toEqual(["keep", "low"]);
      expect(ids(s.waiting)).toEqual(["high"]);
      expect(s.preemptions).toBe(0);
      expect(s.kv.pool.numFree).toBe(0);
    });
  });
});
