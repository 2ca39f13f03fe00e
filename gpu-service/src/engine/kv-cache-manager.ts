/**
 * Per-sequence block tables over the shared `BlockPool`, prefix caching and copy-on-write forks
 * (vLLM v1 `KVCacheManager`).
 *
 * Block hashes chain over full blocks: hash(i) = sha256(hash(i-1), token ids of block i, media keys). A media
 * key names the image content hash and slice index of every placeholder run that overlaps the block, with
 * its offset, so two different images whose placeholder ids are identical never share KV.
 *
 *   tokens:  [ sys prompt ........ | <image> unk*64 </image> | question ... ]
 *   blocks:  [ b0 ][ b1 ][ b2 ][ b3 ][ b4 ][ b5 ][ b6 ] ...
 *   hashes:   h0 -> h1 -> h2 -> h3(+img@k) -> h4(+img) -> ...   (chained: a hit on h4 implies h0..h3)
 */

import { createHash } from "node:crypto";
import type { BlockPool } from "./block-pool";
import { EngineDeadError } from "./types";

/** A run of placeholder positions whose embeddings come from one media slice. */
export interface MediaSpan {
  /** First position (inclusive). */
  start: number;
  /** Last position (exclusive). */
  end: number;
  /** Content identity, e.g. `${contentHash}:${sliceIndex}`. */
  key: string;
}

/** The KV view of one sequence. The manager owns `blockTable`, `blockHashes` and `numCachedBlocks`. */
export interface KvSeq {
  /** Prompt followed by generated tokens. */
  readonly tokens: number[];
  /** Placeholder runs, sorted by start. */
  readonly mediaSpans: readonly MediaSpan[];
  /** Physical block of each logical block. */
  blockTable: number[];
  /** Hashes of the full blocks of `tokens` (computed lazily). */
  blockHashes: string[];
  /** Tokens whose KV is in the cache. */
  numComputed: number;
  /** Leading blocks already offered to the prefix cache. */
  numCachedBlocks: number;
}

/** A block copy the model must run before the step that writes `dst`. */
export interface BlockCopy {
  src: number;
  dst: number;
}

/** A prefix-cache hit: blocks to adopt and the tokens they hold. */
export interface CachedPrefix {
  blocks: number[];
  numTokens: number;
}

/** Block tables, prefix caching and copy-on-write over one `BlockPool`. */
export class KVCacheManager {
  /** Tokens looked up in the prefix cache (counted by the scheduler when a lookup is adopted). */
  queries = 0;
  /** Of those, tokens found. */
  hits = 0;

  constructor(
    readonly pool: BlockPool,
    readonly blockSize: number,
    readonly enablePrefixCaching = true,
  ) {
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`blockSize must be >= 1 (got ${blockSize})`);
  }

  /** Blocks needed to hold `numTokens` tokens. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /** Extends `seq.blockHashes` to every full block of `seq.tokens`. */
  updateHashes(seq: KvSeq): void {
    const bs = this.blockSize;
    const full = Math.floor(seq.tokens.length / bs);
    for (let i = seq.blockHashes.length; i < full; i++) {
      const h = createHash("sha256");
      h.update(i === 0 ? "root" : (seq.blockHashes[i - 1] as string));
      h.update("|");
      h.update(seq.tokens.slice(i * bs, (i + 1) * bs).join(","));
      const s = i * bs;
      const e = s + bs;
      for (const span of seq.mediaSpans) {
        if (span.end <= s) continue;
        if (span.start >= e) break;
        h.update(`|${span.key}@${span.start - s}`);
      }
      seq.blockHashes.push(h.digest("base64"));
    }
  }

  /**
   * The longest cached prefix of a sequence that holds no blocks yet. At least one token is always left
   * to compute, since the step that computes it yields the next logits.
   */
  findCachedPrefix(seq: KvSeq): CachedPrefix {
    if (seq.blockTable.length > 0 || seq.numComputed > 0) throw new EngineDeadError("prefix lookup on a live sequence");
    const empty = { blocks: [], numTokens: 0 };
    if (!this.enablePrefixCaching) return empty;
    this.updateHashes(seq);
    const maxBlocks = Math.floor((seq.tokens.length - 1) / this.blockSize);
    const blocks: number[] = [];
    for (let i = 0; i < maxBlocks; i++) {
      const b = this.pool.lookup(seq.blockHashes[i] as string);
      if (b === undefined) break;
      blocks.push(b);
    }
    return { blocks, numTokens: blocks.length * this.blockSize };
  }

  /**
   * Makes room for `numNew` more tokens after `seq.numComputed` (after adopting `prefix`, if given).
   * Returns the block copies to run first (copy-on-write of a shared partial block), or `null` when the
   * pool cannot fit it; nothing changes then.
   */
  allocateSlots(seq: KvSeq, numNew: number, prefix?: CachedPrefix): BlockCopy[] | null {
    const bs = this.blockSize;
    const pre = prefix?.blocks ?? [];
    const computed = seq.numComputed + (prefix?.numTokens ?? 0);
    const have = seq.blockTable.length + pre.length;
    const need = this.blocksFor(computed + numNew);
    // NOTE: a partially filled last block shared with a fork must be copied before it is written.
    const lastIdx = Math.floor(computed / bs);
    const lastBlock = computed % bs !== 0 ? seq.blockTable[lastIdx] : undefined;
    const cow = numNew > 0 && lastBlock !== undefined && this.pool.refCount(lastBlock) > 1;
    const fresh = Math.max(0, need - have) + (cow ? 1 : 0);
    let revived = 0;
    for (const b of pre) if (this.pool.refCount(b) === 0) revived++;
    if (fresh + revived > this.pool.numFree) return null;

    if (pre.length > 0) {
      this.pool.touch(pre);
      seq.blockTable.push(...pre);
      seq.numComputed = computed;
    }
    const copies: BlockCopy[] = [];
    const got = this.pool.allocate(fresh);
    if (got === null) throw new EngineDeadError("pool refused an allocation it reported room for");
    if (cow && lastBlock !== undefined) {
      const dst = got.shift() as number;
      copies.push({ src: lastBlock, dst });
      seq.blockTable[lastIdx] = dst;
      this.pool.free([lastBlock]);
    }
    seq.blockTable.push(...got);
    return copies;
  }

  /** Offers the sequence's newly completed, computed blocks to the prefix cache. */
  cacheFullBlocks(seq: KvSeq): void {
    if (!this.enablePrefixCaching) return;
    const full = Math.floor(seq.numComputed / this.blockSize);
    if (full <= seq.numCachedBlocks) return;
    this.updateHashes(seq);
    for (let i = seq.numCachedBlocks; i < full; i++) {
      const b = seq.blockTable[i];
      const h = seq.blockHashes[i];
      if (b === undefined || h === undefined) throw new EngineDeadError(`block ${i} of a computed prefix is missing`);
      if (this.pool.blockHash(b) === undefined) this.pool.cacheBlock(b, h);
    }
    seq.numCachedBlocks = full;
  }

  /** Releases all of a sequence's blocks (tail first, so its last blocks are evicted first) and resets it. */
  free(seq: KvSeq): void {
    this.pool.free([...seq.blockTable].reverse());
    seq.blockTable = [];
    seq.numComputed = 0;
    seq.numCachedBlocks = 0;
  }

  /** Makes `child` share all of `parent`'s blocks (copy-on-write); the caller copies the tokens. */
  fork(parent: KvSeq, child: KvSeq): void {
    if (child.blockTable.length > 0) throw new EngineDeadError("fork into a sequence that holds blocks");
    this.pool.touch(parent.blockTable);
    child.blockTable = [...parent.blockTable];
    child.blockHashes = [...parent.blockHashes];
    child.numComputed = parent.numComputed;
    child.numCachedBlocks = parent.numCachedBlocks;
  }
}
