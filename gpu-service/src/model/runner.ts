import * as ort from "onnxruntime-node";
import { kvBytesFromFraction, memoryLimitBytes } from "../memory-budget";
import { ensureGraphs } from "./graph-cache";
import { LLM_IO } from "./llm-graph";
import { normalizePixels } from "./pixels";
import { type PositionIdMode, visionPositionIds } from "./position-ids";
import { buildSessionOptions } from "./session-options";
import type { ModelInfo, ModelRunner, SeqStep, SliceInput } from "./types";
import { sincos2d, VISION_IO, type VisionPrecision } from "./vision-graph";
import type { WeightFormat, WeightSource } from "./weights";

export type { ModelInfo, ModelRunner, SeqStep, SliceInput } from "./types";

export interface ModelOptions {
  modelDir: string;
  /** graph cache root (default `<repo>/.cache`) */
  cacheDir?: string;
  /** tokens per KV block (default 16) */
  blockSize?: number;
  /** KV blocks in the pool; wins over kvCacheBytes */
  numBlocks?: number;
  /** KV pool size in bytes (default 512 MiB) */
  kvCacheBytes?: number;
  /** size the KV pool from this fraction of the process's memory once loaded (memory-budget.ts); wins over kvCacheBytes */
  kvCacheMemoryFraction?: number;
  /** LLM weight storage (default f32) */
  weights?: "f32" | "int4" | "f16";
  executionProvider?: "cpu" | "webgpu" | "cuda";
  /** intra-op threads of both sessions unless set per session (default 0 = ONNX Runtime's choice) */
  intraOpThreads?: number;
  /**
   * vision tower numerics (default f32): `int8` runs the SigLIP encoder's linear layers as
   * DynamicQuantizeMatMul over per-channel int8 weights (about 3x faster on CPU, embeddings within
   * cosine ~0.999 of f32; see README "Vision precision")
   */
  visionPrecision?: VisionPrecision;
  /** intra-op threads of the vision session (default intraOpThreads) */
  visionThreads?: number;
  /** intra-op threads of the LLM session (default intraOpThreads) */
  llmThreads?: number;
  /** whether idle intra-op threads of the vision session busy-wait (default false) */
  visionSpinning?: boolean;
  /** whether idle intra-op threads of the LLM session busy-wait (default false) */
  llmSpinning?: boolean;
  /** vision position-id bucketing (default torch-avx2, MINICPMV26.md §4.2) */
  positionIds?: "torch-avx2" | "floor";
}

/** Slices per vision run (the reference's vision_batch_size). */
const VISION_BATCH = 16;
const DEFAULT_KV_BYTES = 512 * 1024 * 1024;

/** Everything the runner needs besides a weight source. */
export type RunnerOptions = Omit<ModelOptions, "modelDir"> & { cacheDir: string; modelName: string };

/** Creates a runner over any weight source (a checkpoint, or random weights in tests). */
export async function createRunnerFromWeights(src: WeightSource, opts: RunnerOptions): Promise<OrtModelRunner> {
  const blockSize = opts.blockSize ?? 16;
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > 1024)
    throw new RangeError(`blockSize: must be an integer in [1, 1024], got ${blockSize}`);
  const weights: WeightFormat = opts.weights ?? "f32";
  const ep = opts.executionProvider ?? "cpu";
  const t0 = performance.now();
  const visionPrecision = opts.visionPrecision ?? "f32";
  if (visionPrecision !== "f32" && visionPrecision !== "int8")
    throw new RangeError(`visionPrecision: must be f32 or int8, got ${String(visionPrecision)}`);
  const graphs = await ensureGraphs(src, { weights, blockSize, visionPrecision }, opts.cacheDir);
  const visionOptions = buildSessionOptions(ep, {
    intraOpThreads: opts.visionThreads ?? opts.intraOpThreads ?? 0,
    allowSpinning: opts.visionSpinning ?? false,
  });
  const llmOptions = buildSessionOptions(ep, {
    intraOpThreads: opts.llmThreads ?? opts.intraOpThreads ?? 0,
    allowSpinning: opts.llmSpinning ?? false,
  });
  let vision: ort.InferenceSession;
  let llm: ort.InferenceSession;
  try {
    vision = await ort.InferenceSession.create(graphs.visionPath, visionOptions);
    llm = await ort.InferenceSession.create(graphs.llmPath, llmOptions);
  } catch (e) {
    if (ep === "cpu") throw e;
    const avail = ort
      .listSupportedBackends()
      .map((b) => b.name)
      .join(", ");
    throw new Error(
      `executionProvider "${ep}" is not available on this machine (onnxruntime-node backends: ${avail}): ${String(e).split("\n")[0]}`,
    );
  }
  const c = src.config.llm;
  const kvBytesPerToken = 2 * c.numLayers * c.numKvHeads * c.headDim * 4;
  const kvBytes =
    opts.kvCacheMemoryFraction === undefined
      ? (opts.kvCacheBytes ?? DEFAULT_KV_BYTES)
      : kvBytesFromFraction({
          fraction: opts.kvCacheMemoryFraction,
          limitBytes: memoryLimitBytes(),
          usedBytes: process.memoryUsage.rss(),
          blockBytes: kvBytesPerToken * blockSize,
        });
  const numBlocks = opts.numBlocks ?? Math.floor(kvBytes / (kvBytesPerToken * blockSize));
  if (!Number.isInteger(numBlocks) || numBlocks < 1)
    throw new RangeError(`numBlocks: must be a positive integer, got ${numBlocks}`);
  const info: ModelInfo = {
    modelName: opts.modelName,
    hiddenSize: c.hiddenSize,
    vocabSize: c.vocabSize,
    numLayers: c.numLayers,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    blockSize,
    numBlocks,
    queryNum: src.config.queryNum,
    contextLength: c.maxPositionEmbeddings,
    kvBytesPerToken,
  };
  const loadMs = performance.now() - t0;
  return new OrtModelRunner(info, src, vision, llm, opts.positionIds ?? "torch-avx2", {
    built: graphs.built,
    buildMs: graphs.buildMs,
    loadMs,
    cacheDir: graphs.dir,
  });
}

/** Timings and location of the graphs behind a runner. */
export interface RunnerStats {
  built: boolean;
  buildMs: number;
  loadMs: number;
  cacheDir: string;
}

/** ModelRunner on onnxruntime-node: one vision session, one LLM session, JS-owned KV pools. */
export class OrtModelRunner implements ModelRunner {
  /** per layer [numBlocks, kvHeads, blockSize, headDim] */
  readonly keyPools: Float32Array[] = [];
  readonly valuePools: Float32Array[] = [];
  private readonly poolFeeds: Record<string, ort.Tensor> = {};
  private readonly posCache = new Map<string, { ids: ort.Tensor; pos2d: ort.Tensor }>();
  private busy = false;
  private disposed = false;

  constructor(
    readonly info: ModelInfo,
    private readonly src: WeightSource,
    private readonly vision: ort.InferenceSession,
    private readonly llm: ort.InferenceSession,
    private readonly positionMode: PositionIdMode,
    readonly stats: RunnerStats,
  ) {
    const { numBlocks, numKvHeads, blockSize, headDim } = info;
    const dims = [numBlocks, numKvHeads, blockSize, headDim];
    for (let i = 0; i < info.numLayers; i++) {
      const k = new Float32Array(numBlocks * numKvHeads * blockSize * headDim);
      const v = new Float32Array(k.length);
      this.keyPools.push(k);
      this.valuePools.push(v);
      // NOTE: CPU tensors wrap the JS buffers; ORT reads the pools in place (no copy per step).
      this.poolFeeds[`${LLM_IO.keyPool}.${i}`] = new ort.Tensor("float32", k, dims);
      this.poolFeeds[`${LLM_IO.valuePool}.${i}`] = new ort.Tensor("float32", v, dims);
    }
  }

  async encodeSlices(slices: SliceInput[]): Promise<Float32Array[]> {
    this.checkAlive();
    const P = this.src.config.vision.patchSize;
    const groups = new Map<string, number[]>();
    slices.forEach((s, i) => {
      if (!Number.isInteger(s.width) || !Number.isInteger(s.height) || s.width < P || s.height < P)
        throw new RangeError(`slices[${i}]: width and height must be integers >= ${P}, got ${s.width}x${s.height}`);
      if (s.width % P !== 0 || s.height % P !== 0)
        throw new RangeError(`slices[${i}]: width and height must be multiples of ${P}, got ${s.width}x${s.height}`);
      if (s.rgb.length !== s.width * s.height * 3)
        throw new RangeError(`slices[${i}].rgb: expected ${s.width * s.height * 3} bytes (HxWx3), got ${s.rgb.length}`);
      const key = `${s.width}x${s.height}`;
      const g = groups.get(key);
      if (g) g.push(i);
      else groups.set(key, [i]);
    });
    const out: Float32Array[] = new Array(slices.length);
    const per = this.info.queryNum * this.src.config.resampler.embedDim;
    for (const idx of groups.values()) {
      for (let c0 = 0; c0 < idx.length; c0 += VISION_BATCH) {
        const chunk = idx.slice(c0, c0 + VISION_BATCH);
        const { width: W, height: H } = slices[chunk[0] as number] as SliceInput;
        const plane = 3 * H * W;
        const pixels = new Float32Array(chunk.length * plane); // [n,3,H,W]
        for (const [j, si] of chunk.entries())
          normalizePixels((slices[si] as SliceInput).rgb, H, W, pixels.subarray(j * plane, (j + 1) * plane));
        const pos = this.positions(H / P, W / P);
        const res = await this.vision.run({
          [VISION_IO.pixels]: new ort.Tensor("float32", pixels, [chunk.length, 3, H, W]),
          [VISION_IO.positionIds]: pos.ids,
          [VISION_IO.pos2d]: pos.pos2d,
        });
        const emb = (res[VISION_IO.output] as ort.Tensor).data as Float32Array; // [n,Q,E]
        chunk.forEach((si, j) => {
          out[si] = emb.subarray(j * per, (j + 1) * per);
        });
      }
    }
    return out;
  }

  private positions(nh: number, nw: number) {
    const key = `${nh}x${nw}`;
    let p = this.posCache.get(key);
    if (!p) {
      const E = this.src.config.resampler.embedDim;
      p = {
        ids: new ort.Tensor("int64", visionPositionIds(nh, nw, this.positionMode), [nh * nw]),
        pos2d: new ort.Tensor("float32", sincos2d(nh, nw, E), [nh * nw, E]),
      };
      this.posCache.set(key, p);
    }
    return p;
  }

  async step(seqs: SeqStep[]): Promise<(Float32Array | null)[]> {
    this.checkAlive();
    if (seqs.length === 0) return [];
    if (this.busy) throw new Error("ModelRunner.step: a step is already running (steps must not overlap)");
    const { hiddenSize: hid, blockSize: BS, numBlocks, vocabSize, contextLength } = this.info;
    const B = seqs.length;
    let T = 0;
    let MB = 1;
    let K = 0;
    seqs.forEach((s, b) => {
      const n = s.tokenIds.length;
      if (n < 1) throw new RangeError(`seqs[${b}].tokenIds: must hold at least 1 token`);
      if (!Number.isInteger(s.pastLen) || s.pastLen < 0)
        throw new RangeError(`seqs[${b}].pastLen: must be a non-negative integer, got ${s.pastLen}`);
      if (s.pastLen + n > contextLength)
        throw new RangeError(`seqs[${b}]: pastLen + tokens = ${s.pastLen + n} exceeds contextLength ${contextLength}`);
      const need = Math.ceil((s.pastLen + n) / BS);
      if (s.blockTable.length < need)
        throw new RangeError(
          `seqs[${b}].blockTable: needs ${need} blocks for ${s.pastLen + n} slots, got ${s.blockTable.length}`,
        );
      for (let j = 0; j < need; j++) {
        const id = s.blockTable[j] as number;
        if (!Number.isInteger(id) || id < 0 || id >= numBlocks)
          throw new RangeError(`seqs[${b}].blockTable[${j}]: block id ${id} outside [0, ${numBlocks})`);
      }
      for (let t = 0; t < n; t++) {
        const id = s.tokenIds[t] as number;
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize)
          throw new RangeError(`seqs[${b}].tokenIds[${t}]: token id ${id} outside [0, ${vocabSize})`);
      }
      for (const [j, e] of (s.embeds ?? []).entries()) {
        const rows = e.rows.length / hid;
        if (!Number.isInteger(rows))
          throw new RangeError(
            `seqs[${b}].embeds[${j}].rows: length ${e.rows.length} is not a multiple of hidden ${hid}`,
          );
        if (!Number.isInteger(e.offset) || e.offset < 0 || e.offset + rows > n)
          throw new RangeError(
            `seqs[${b}].embeds[${j}]: rows [${e.offset}, ${e.offset + rows}) outside the ${n} new tokens`,
          );
        K += rows;
      }
      T = Math.max(T, n);
      MB = Math.max(MB, Math.ceil(s.pastLen / BS));
    });

    const ids = new BigInt64Array(B * T); // [B,T], right-padded with 0
    const pastLens = new BigInt64Array(B);
    const tables = new BigInt64Array(B * MB); // [B,MB], padding = block 0 (never read unmasked)
    const embeds = new Float32Array(K * hid); // [K,hid]
    const embedIndex = new BigInt64Array(K); // [K,1]
    const logitRows: number[] = [];
    let k = 0;
    seqs.forEach((s, b) => {
      const n = s.tokenIds.length;
      for (let t = 0; t < n; t++) ids[b * T + t] = BigInt(s.tokenIds[t] as number);
      pastLens[b] = BigInt(s.pastLen);
      const used = Math.ceil(s.pastLen / BS);
      for (let j = 0; j < used; j++) tables[b * MB + j] = BigInt(s.blockTable[j] as number);
      for (const e of s.embeds ?? []) {
        const rows = e.rows.length / hid;
        embeds.set(e.rows, k * hid);
        for (let r = 0; r < rows; r++) embedIndex[k + r] = BigInt(b * T + e.offset + r);
        k += rows;
      }
      if (s.wantLogits) logitRows.push(b * T + n - 1);
    });

    this.busy = true;
    let res: ort.InferenceSession.ReturnType;
    try {
      res = await this.llm.run({
        ...this.poolFeeds,
        [LLM_IO.inputIds]: new ort.Tensor("int64", ids, [B, T]),
        [LLM_IO.embeds]: new ort.Tensor("float32", embeds, [K, hid]),
        [LLM_IO.embedIndex]: new ort.Tensor("int64", embedIndex, [K, 1]),
        [LLM_IO.pastLens]: new ort.Tensor("int64", pastLens, [B]),
        [LLM_IO.blockTables]: new ort.Tensor("int64", tables, [B, MB]),
        [LLM_IO.logitsIndex]: new ort.Tensor("int64", BigInt64Array.from(logitRows.map(BigInt)), [logitRows.length]),
      });
    } finally {
      this.busy = false;
    }
    this.writeNewRows(seqs, T, res);
    const logits = (res[LLM_IO.logits] as ort.Tensor).data as Float32Array; // [R,vocab]
    let r = 0;
    return seqs.map((s) => (s.wantLogits ? logits.subarray(r * vocabSize, ++r * vocabSize) : null));
  }

  /** Writes each sequence's new K/V rows [B,T,KVH·D] into its slots: slot p -> block table[p / BS], offset p % BS. */
  private writeNewRows(seqs: SeqStep[], T: number, res: ort.InferenceSession.ReturnType): void {
    const { blockSize: BS, numKvHeads: KVH, headDim: D } = this.info;
    for (let l = 0; l < this.info.numLayers; l++) {
      const kNew = (res[`${LLM_IO.keyNew}.${l}`] as ort.Tensor).data as Float32Array;
      const vNew = (res[`${LLM_IO.valueNew}.${l}`] as ort.Tensor).data as Float32Array;
      const kPool = this.keyPools[l] as Float32Array;
      const vPool = this.valuePools[l] as Float32Array;
      seqs.forEach((s, b) => {
        for (let t = 0; t < s.tokenIds.length; t++) {
          const p = s.pastLen + t;
          const blk = s.blockTable[Math.floor(p / BS)] as number;
          const off = p % BS;
          for (let h = 0; h < KVH; h++) {
            const from = ((b * T + t) * KVH + h) * D;
            const to = ((blk * KVH + h) * BS + off) * D;
            kPool.set(kNew.subarray(from, from + D), to);
            vPool.set(vNew.subarray(from, from + D), to);
          }
        }
      });
    }
  }

  copyBlock(src: number, dst: number): void {
    this.checkAlive();
    const { numBlocks, numKvHeads, blockSize, headDim } = this.info;
    for (const [name, id] of [
      ["src", src],
      ["dst", dst],
    ] as const)
      if (!Number.isInteger(id) || id < 0 || id >= numBlocks)
        throw new RangeError(`copyBlock ${name}: block id ${id} outside [0, ${numBlocks})`);
    if (src === dst) return;
    const stride = numKvHeads * blockSize * headDim;
    for (const pool of [...this.keyPools, ...this.valuePools])
      pool.copyWithin(dst * stride, src * stride, (src + 1) * stride);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.vision.release();
    await this.llm.release();
    this.keyPools.length = 0;
    this.valuePools.length = 0;
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error("ModelRunner: used after dispose()");
  }
}
