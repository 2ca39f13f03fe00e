/**
 * TEST ONLY: a deterministic stand-in for the model layer, used by the engine's unit tests.
 *
 * It keeps a real paged "KV cache" of one uint32 per slot (a hash of the token or embedding row and its
 * position) and computes logits as a hash of everything the sequence's block table lets it read, so any
 * block-table, prefix-cache or copy-on-write mistake changes the output tokens. Two sequences writing the
 * same slot in one step throw (a missing copy-on-write).
 */

import type { EngineModel, EngineModelInfo, SeqStep, SliceInput } from "./types";

function mix(h: number, v: number): number {
  let x = (h ^ Math.imul(v | 0, 0x9e3779b1)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Options of the fake model. */
export interface FakeModelOptions {
  vocabSize?: number;
  blockSize?: number;
  numBlocks?: number;
  queryNum?: number;
  hiddenSize?: number;
  contextLength?: number;
}

/** Deterministic paged fake of `ModelRunner`. */
export class FakeModel implements EngineModel {
  readonly info: EngineModelInfo;
  private readonly kv: Uint32Array;
  /** Slices encoded so far. */
  encodedSlices = 0;
  /** Tokens run per step. */
  readonly stepTokens: number[] = [];
  /** Block copies run. */
  copies = 0;

  constructor(o: FakeModelOptions = {}) {
    this.info = {
      modelName: "fake",
      hiddenSize: o.hiddenSize ?? 2,
      vocabSize: o.vocabSize ?? 64,
      blockSize: o.blockSize ?? 4,
      numBlocks: o.numBlocks ?? 64,
      queryNum: o.queryNum ?? 4,
      contextLength: o.contextLength ?? 512,
      kvBytesPerToken: 4,
    };
    this.kv = new Uint32Array(this.info.numBlocks * this.info.blockSize).fill(0xdeadbeef);
  }

  async encodeSlices(slices: SliceInput[]): Promise<Float32Array[]> {
    const { queryNum: q, hiddenSize: h } = this.info;
    this.encodedSlices += slices.length;
    return slices.map((s) => {
      let seed = mix(s.width, s.height);
      for (const b of s.rgb) seed = mix(seed, b);
      return Float32Array.from({ length: q * h }, (_, i) => mix(seed, i) / 2 ** 32);
    });
  }

  async step(seqs: SeqStep[]): Promise<(Float32Array | null)[]> {
    const bs = this.info.blockSize;
    const h = this.info.hiddenSize;
    const written = new Set<number>();
    let n = 0;
    const out = seqs.map((s) => {
      const rowOf = new Map<number, number>();
      for (const e of s.embeds ?? [])
        for (let r = 0; r * h < e.rows.length; r++)
          rowOf.set(e.offset + r, mix(0x1234, Math.round((e.rows[r * h] as number) * 2 ** 31)));
      const slot = (p: number) => {
        const b = s.blockTable[Math.floor(p / bs)];
        if (b === undefined) throw new Error(`position ${p} is outside the block table`);
        return b * bs + (p % bs);
      };
      for (let j = 0; j < s.tokenIds.length; j++) {
        const p = s.pastLen + j;
        const i = slot(p);
        if (written.has(i)) throw new Error(`slot ${i} written twice in one step (missing copy-on-write)`);
        written.add(i);
        this.kv[i] = mix(rowOf.get(j) ?? mix(7, s.tokenIds[j] as number), p);
      }
      n += s.tokenIds.length;
      if (!s.wantLogits) return null;
      let ctx = 0;
      const end = s.pastLen + s.tokenIds.length;
      for (let p = 0; p < end; p++) ctx = mix(ctx, this.kv[slot(p)] as number);
      return Float32Array.from({ length: this.info.vocabSize }, (_, v) => (mix(ctx, v) / 2 ** 32) * 8 - 4);
    });
    this.stepTokens.push(n);
    return out;
  }

  copyBlock(src: number, dst: number): void {
    const bs = this.info.blockSize;
    this.kv.copyWithin(dst * bs, src * bs, (src + 1) * bs);
    this.copies++;
  }

  async dispose(): Promise<void> {}
}

/** TEST ONLY: token id i is one character: `abc…`[i % 26] for ids < 60, then "A".."D". */
export const fakeTokens = {
  tokenBytes: (id: number) => new TextEncoder().encode(String.fromCharCode(id >= 60 ? 65 + id - 60 : 97 + (id % 26))),
};
