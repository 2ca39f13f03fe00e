/**
 * The model layer's interface, free of ONNX Runtime so the engine's bookkeeping can import it (types only).
 */

/** One image slice: u8 RGB [height, width, 3], both multiples of 14. */
export interface SliceInput {
  width: number;
  height: number;
  rgb: Uint8Array;
}

/** One sequence's share of a step. */
export interface SeqStep {
  /** new tokens this step: a prefill chunk or one decode token */
  tokenIds: ArrayLike<number>;
  /** tokens already in the KV pool = position of tokenIds[0] */
  pastLen: number;
  /** physical block ids covering at least pastLen + tokenIds.length slots */
  blockTable: ArrayLike<number>;
  /** replace token embeddings: rows [k, hidden] from index offset (within tokenIds) */
  embeds?: { offset: number; rows: Float32Array }[];
  /** return logits of the last new token */
  wantLogits: boolean;
}

/** What the engine and the service need to know about the loaded model. */
export interface ModelInfo {
  modelName: string;
  hiddenSize: number;
  vocabSize: number;
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  numBlocks: number;
  queryNum: number;
  contextLength: number;
  kvBytesPerToken: number;
}

/** Executes the model: vision encoding and batched LLM steps over a paged KV pool it owns. */
export interface ModelRunner {
  readonly info: ModelInfo;
  /** one [queryNum·hidden] per slice, same order */
  encodeSlices(slices: SliceInput[]): Promise<Float32Array[]>;
  /** logits [vocabSize] per seq, null if !wantLogits */
  step(seqs: SeqStep[]): Promise<(Float32Array | null)[]>;
  /** copy-on-write support: copies every layer's K/V of block `src` into block `dst` */
  copyBlock(src: number, dst: number): void;
  dispose(): Promise<void>;
}
