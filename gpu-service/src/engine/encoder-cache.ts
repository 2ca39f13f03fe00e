/**
 * Vision embeddings by image content hash under a byte budget, least recently used evicted first
 * (vLLM `EncoderCacheManager`, simplified: a request that needs an entry holds its own reference to the
 * arrays, so evicting an entry never breaks a running prefill).
 */

/** LRU cache of per-slice embeddings keyed by media content hash. */
export class EncoderCache {
  private readonly entries = new Map<string, { embeds: Float32Array[]; bytes: number }>();
  private used = 0;
  /** Lookups. */
  queries = 0;
  /** Lookups that found the entry. */
  hits = 0;

  /** @param budgetBytes the most bytes of embeddings held; 0 disables caching. */
  constructor(readonly budgetBytes: number) {
    if (!(budgetBytes >= 0)) throw new Error(`encoder cache budget must be >= 0 bytes (got ${budgetBytes})`);
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.used;
  }

  /** Entries held now. */
  get size(): number {
    return this.entries.size;
  }

  /** The embeddings of `hash`, marking them most recently used. */
  get(hash: string): Float32Array[] | undefined {
    this.queries++;
    const e = this.entries.get(hash);
    if (e === undefined) return undefined;
    this.hits++;
    this.entries.delete(hash);
    this.entries.set(hash, e);
    return e.embeds;
  }

  /** Whether `hash` is held (does not count as a query or touch it). */
  has(hash: string): boolean {
    return this.entries.has(hash);
  }

  /** Stores embeddings, evicting the least recently used entries; an entry larger than the budget is skipped. */
  put(hash: string, embeds: Float32Array[]): void {
    const bytes = embeds.reduce((s, a) => s + a.byteLength, 0);
    const old = this.entries.get(hash);
    if (old !== undefined) {
      this.entries.delete(hash);
      this.used -= old.bytes;
    }
    if (bytes > this.budgetBytes) return;
    for (const [k, e] of this.entries) {
      if (this.used + bytes <= this.budgetBytes) break;
      this.entries.delete(k);
      this.used -= e.bytes;
    }
    this.entries.set(hash, { embeds, bytes });
    this.used += bytes;
  }

  /** Cached hashes, least recently used first. */
  keys(): string[] {
    return [...this.entries.keys()];
  }
}
