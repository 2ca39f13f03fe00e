/**
 * The physical KV blocks of one model replica: reference counts, a free queue and the prefix-cache map
 * (vLLM v1 `BlockPool` + `FreeKVCacheBlockQueue`).
 *
 * A block is free when its reference count is 0. Free blocks sit in one queue ordered by when they were
 * freed; `allocate` takes from the head, so the block freed longest ago goes first (LRU). A free block may
 * still hold a cached full block (it has a hash): it can be revived by a prefix hit (`touch`), which takes
 * it out of the queue, or evicted when `allocate` reaches it, which drops its hash.
 *
 * Plain integers only: no tensors, no I/O.
 */

import { EngineDeadError } from "./types";

const NONE = -1;

/** Reference-counted KV blocks with an LRU free queue and a hash -> block prefix cache. */
export class BlockPool {
  /** Number of physical blocks. */
  readonly numBlocks: number;
  private readonly refs: Int32Array;
  // Doubly linked free queue over block ids.
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly inQueue: Uint8Array;
  private head = NONE;
  private tail = NONE;
  private freeCount = 0;
  private readonly hashOf: (string | undefined)[];
  private readonly cached = new Map<string, number>();
  /** Cached blocks dropped to make room. */
  evictions = 0;

  constructor(numBlocks: number) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new Error(`numBlocks must be >= 1 (got ${numBlocks})`);
    this.numBlocks = numBlocks;
    this.refs = new Int32Array(numBlocks);
    this.prev = new Int32Array(numBlocks).fill(NONE);
    this.next = new Int32Array(numBlocks).fill(NONE);
    this.inQueue = new Uint8Array(numBlocks);
    this.hashOf = new Array<string | undefined>(numBlocks).fill(undefined);
    for (let b = 0; b < numBlocks; b++) this.pushTail(b);
  }

  /** Blocks that `allocate` can hand out now (free, cached or not). */
  get numFree(): number {
    return this.freeCount;
  }

  /** Blocks referenced by at least one sequence. */
  get numUsed(): number {
    return this.numBlocks - this.freeCount;
  }

  /** Blocks that hold a prefix-cache entry (referenced or not). */
  get numCached(): number {
    return this.cached.size;
  }

  /** Fraction of blocks in use, 0..1. */
  get usage(): number {
    return this.numUsed / this.numBlocks;
  }

  /** Reference count of a block. */
  refCount(block: number): number {
    return this.refs[block] ?? 0;
  }

  /** The prefix-cache hash a block holds, if any. */
  blockHash(block: number): string | undefined {
    return this.hashOf[block];
  }

  /**
   * Takes `n` blocks from the head of the free queue (evicting their cache entries) with reference count 1;
   * `null` when fewer than `n` are free (nothing changes then).
   */
  allocate(n: number): number[] | null {
    if (n > this.freeCount) return null;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const b = this.head;
      this.unlink(b);
      const h = this.hashOf[b];
      if (h !== undefined) {
        this.cached.delete(h);
        this.hashOf[b] = undefined;
        this.evictions++;
      }
      this.refs[b] = 1;
      out.push(b);
    }
    return out;
  }

  /** Drops one reference per listed block; blocks reaching 0 join the free queue's tail in list order. */
  free(blocks: readonly number[]): void {
    for (const b of blocks) {
      const r = this.refs[b] ?? 0;
      if (r <= 0) throw new EngineDeadError(`block ${b} freed with reference count ${r}`);
      this.refs[b] = r - 1;
      if (r === 1) this.pushTail(b);
    }
  }

  /** Adds one reference per listed block, reviving free (cached) ones out of the queue. */
  touch(blocks: readonly number[]): void {
    for (const b of blocks) {
      if (this.refs[b] === 0) {
        if (!this.inQueue[b]) throw new EngineDeadError(`block ${b} has no references but is not in the free queue`);
        this.unlink(b);
      }
      this.refs[b] = (this.refs[b] ?? 0) + 1;
    }
  }

  /** The cached block holding `hash`, if any. */
  lookup(hash: string): number | undefined {
    return this.cached.get(hash);
  }

  /**
   * Registers a full block under `hash`. Returns false when another block already holds that hash (the
   * first one stays canonical) or this block already has one.
   */
  cacheBlock(block: number, hash: string): boolean {
    if ((this.refs[block] ?? 0) <= 0) throw new EngineDeadError(`caching unreferenced block ${block}`);
    if (this.hashOf[block] !== undefined || this.cached.has(hash)) return false;
    this.cached.set(hash, block);
    this.hashOf[block] = hash;
    return true;
  }

  /** Drops every unreferenced cached block's hash (e.g. after a weights change). */
  resetPrefixCache(): void {
    for (const [h, b] of this.cached) {
      if (this.refs[b] === 0) {
        this.cached.delete(h);
        this.hashOf[b] = undefined;
      }
    }
  }

  /** Free block ids in queue order (head first); for tests and invariant checks. */
  freeQueue(): number[] {
    const out: number[] = [];
    for (let b = this.head; b !== NONE; b = this.next[b] ?? NONE) out.push(b);
    return out;
  }

  private pushTail(b: number): void {
    this.prev[b] = this.tail;
    this.next[b] = NONE;
    if (this.tail === NONE) this.head = b;
    else this.next[this.tail] = b;
    this.tail = b;
    this.inQueue[b] = 1;
    this.freeCount++;
  }

  private unlink(b: number): void {
    const p = this.prev[b] ?? NONE;
    const n = this.next[b] ?? NONE;
    if (p === NONE) this.head = n;
    else this.next[p] = n;
    if (n === NONE) this.tail = p;
    else this.prev[n] = p;
    this.prev[b] = NONE;
    this.next[b] = NONE;
    this.inQueue[b] = 0;
    this.freeCount--;
  }
}
