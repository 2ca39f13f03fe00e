import { type Graph, ModelBuilder } from "./graph-builder";
import { LayerFactory } from "./graph-ops";
import type { WeightFormat, WeightSource } from "./weights";
import { toHalfArray } from "./weights";

/** I/O names of the LLM graph (defined once; also stored in the model's metadata). */
export const LLM_IO = {
  /** [B, T] int64, new tokens per sequence, right-padded */
  inputIds: "input_ids",
  /** [K, hidden] f32, rows that replace token embeddings (image embeds) */
  embeds: "embeds",
  /** [K, 1] int64, flat index b·T + t of each embeds row */
  embedIndex: "embed_index",
  /** [B] int64, tokens already in the KV pool per sequence (= position of the first new token) */
  pastLens: "past_lens",
  /** [B, MB] int64, physical block ids per sequence (padding entries: any valid id) */
  blockTables: "block_tables",
  /** [R] int64, flat index b·T + t of the rows whose logits are wanted */
  logitsIndex: "logits_index",
  /** [R, vocab] f32 */
  logits: "logits",
  /** per layer i: `${keyPool}.${i}` / `${valuePool}.${i}` [numBlocks, kvHeads, blockSize, headDim] f32 */
  keyPool: "key_pool",
  valuePool: "value_pool",
  /** per layer i: `${keyNew}.${i}` rotated new keys, `${valueNew}.${i}` new values, [B, T, kvHeads·headDim] */
  keyNew: "key_new",
  valueNew: "value_new",
} as const;

/** Options that change the built LLM graph (part of the cache key). */
export interface LlmGraphOptions {
  weights: WeightFormat;
  blockSize: number;
}

/** RoPE cos/sin tables [maxPos, headDim/2] from float32 pos·inv_freq, as transformers 4.40 Qwen2 builds them. */
export function ropeTables(maxPos: number, headDim: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const f = Math.fround;
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(theta ** f((2 * i) / headDim)));
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++)
    for (let i = 0; i < half; i++) {
      const a = f(p * (inv[i] as number));
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  return { cos, sin };
}

/**
 * Builds the Qwen2 decoder with paged attention over JS-owned KV pools.
 *
 * ```
 * input_ids [B,T] ─Gather(embed)─> [B·T,hid] ─ScatterND(embed_index, embeds)─> x [B,T,hid]
 * pos [B,T] = past_lens[b] + t
 * layer ×N:  h = RMSNorm(x);  q,k,v = h·W+b;  q_rot,k_rot = RoPE(q,k,pos)   ─> key_new.i = k_rot, value_new.i = v
 *            a = Loop over b: gather sequence b's past blocks from the pools, attend (past ∪ new, causal)
 *            x += a·Wo;  x += down(silu(gate(RMSNorm x)) · up(RMSNorm x))
 * x [B·T,hid] ─Gather(logits_index)─> [R,hid] ─RMSNorm─> lm_head ─> logits [R,vocab]
 * ```
 */
export async function buildLlmGraph(src: WeightSource, opts: LlmGraphOptions, externalDataPath?: string) {
  const c = src.config.llm;
  const m = new ModelBuilder("minicpmv_llm", {
    ...(externalDataPath ? { externalDataPath } : {}),
    metadata: { io: JSON.stringify(LLM_IO), weights: opts.weights, blockSize: String(opts.blockSize) },
  });
  const g = m.graph;
  const L = new LayerFactory(g, src);
  const hid = c.hiddenSize;
  const H = c.numHeads;
  const KVH = c.numKvHeads;
  const D = c.headDim;
  if (H % KVH !== 0) throw new Error(`numHeads ${H} is not a multiple of numKvHeads ${KVH}`);
  if (D % 16 !== 0) throw new Error(`headDim ${D} must be a multiple of 16`);

  const ids = g.input(LLM_IO.inputIds, "int64", ["B", "T"]);
  const embeds = g.input(LLM_IO.embeds, "float32", ["K", hid]);
  const embedIndex = g.input(LLM_IO.embedIndex, "int64", ["K", 1]);
  const pastLens = g.input(LLM_IO.pastLens, "int64", ["B"]);
  const blockTables = g.input(LLM_IO.blockTables, "int64", ["B", "MB"]);
  const logitsIndex = g.input(LLM_IO.logitsIndex, "int64", ["R"]);

  // Embeddings: [B,T] -> [B,T,hid] -> [B·T,hid], image rows scattered in, back to [B,T,hid]
  const embW = await src.readTensor("llm.model.embed_tokens.weight");
  if (embW.length !== c.vocabSize * hid)
    throw new Error(`llm.model.embed_tokens.weight: expected ${c.vocabSize}x${hid}`);
  // NOTE: int4/f16 keep the table in half (bf16 checkpoint values convert exactly unless tiny).
  const table =
    opts.weights === "f32"
      ? g.init("embed_tokens", "float32", [c.vocabSize, hid], embW)
      : g.op("Cast", [g.init("embed_tokens.f16", "float16", [c.vocabSize, hid], toHalfArray(embW))], { to: 1 });
  const tok = g.op("Gather", [table, ids], { axis: 0 }); // [B,T,hid]
  const bt3 = g.op("Shape", [tok]); // [3] = (B,T,hid)
  const flat = g.op("ScatterND", [L.reshape(tok, [-1, hid]), embedIndex, embeds]); // [B·T,hid]
  let x = g.op("Reshape", [flat, bt3]);

  // Positions [B,T], clamped into the RoPE table (padded rows may run past it)
  const T1 = g.op("Shape", [ids], { start: 1, end: 2 }); // [1]
  const arT = g.op("Range", [g.i64(0), g.op("Squeeze", [T1]), g.i64(1)]); // [T]
  const pos = g.op("Min", [
    g.op("Add", [g.op("Unsqueeze", [pastLens, g.i64([1])]), arT]),
    g.i64(c.maxPositionEmbeddings - 1),
  ]);
  const rope = ropeTables(c.maxPositionEmbeddings, D, c.ropeTheta);
  const cos = g.init("rope_cos", "float32", [c.maxPositionEmbeddings, D / 2], rope.cos);
  const sin = g.init("rope_sin", "float32", [c.maxPositionEmbeddings, D / 2], rope.sin);
  // Causal visibility among the new tokens [1,1,T,T]: t' <= t (shared by every layer's loop body)
  const causal = g.op("LessOrEqual", [
    g.op("Unsqueeze", [arT, g.i64([0, 1, 2])]),
    g.op("Unsqueeze", [arT, g.i64([0, 1, 3])]),
  ]);
  const numSeqs = g.op("Squeeze", [g.op("Shape", [ids], { start: 0, end: 1 })]);
  const ctx: AttnContext = { T1, arT, causal, pastLens, blockTables, H, KVH, D, BS: opts.blockSize };

  for (let i = 0; i < c.numLayers; i++) {
    const p = `llm.model.layers.${i}`;
    const keyPool = g.input(`${LLM_IO.keyPool}.${i}`, "float32", ["NB", KVH, opts.blockSize, D]);
    const valuePool = g.input(`${LLM_IO.valuePool}.${i}`, "float32", ["NB", KVH, opts.blockSize, D]);
    const h = await L.rmsNorm(x, `${p}.input_layernorm.weight`, hid, c.rmsNormEps);
    // q, k, v in one MatMul(NBits): one pass over h, one kernel launch instead of three
    const attnProj = (t: string, n: number) => ({
      weight: `${p}.self_attn.${t}_proj.weight`,
      n,
      bias: `${p}.self_attn.${t}_proj.bias`,
    });
    const qkv = await L.linearConcat(
      h,
      `${p}.self_attn.qkv_proj`,
      [attnProj("q", H * D), attnProj("k", KVH * D), attnProj("v", KVH * D)],
      hid,
      opts.weights,
    );
    const [q, k, v] = g.opN("Split", [qkv, g.i64([H * D, KVH * D, KVH * D])], 3, { axis: -1 }) as [
      string,
      string,
      string,
    ];
    const ropeOp = (t: string, heads: number) =>
      g.op("RotaryEmbedding", [t, pos, cos, sin], { interleaved: 0, num_heads: heads }, { domain: "com.microsoft" });
    const qRot = ropeOp(q, H); // [B,T,H·D]
    const kRot = ropeOp(k, KVH); // [B,T,KVH·D]
    g.output(kRot, `${LLM_IO.keyNew}.${i}`, "float32", ["B", "T", KVH * D]);
    g.output(v, `${LLM_IO.valueNew}.${i}`, "float32", ["B", "T", KVH * D]);
    // Pools viewed as [NB·KVH, BS, D] (a reshape of a contiguous input: no copy)
    const kpr = L.reshape(keyPool, [-1, opts.blockSize, D]);
    const vpr = L.reshape(valuePool, [-1, opts.blockSize, D]);
    const body = pagedAttentionBody(m.subgraph(`attn_${i}`), ctx, qRot, kRot, v, kpr, vpr);
    const attn = g.op("Loop", [numSeqs, ""], { body }); // [B,T,H·D]
    x = g.op("Add", [x, await L.linear(attn, `${p}.self_attn.o_proj.weight`, H * D, hid, opts.weights)]);
    const h2 = await L.rmsNorm(x, `${p}.post_attention_layernorm.weight`, hid, c.rmsNormEps);
    const I = c.intermediateSize;
    const gateUp = await L.linearConcat(
      h2,
      `${p}.mlp.gate_up_proj`,
      [
        { weight: `${p}.mlp.gate_proj.weight`, n: I },
        { weight: `${p}.mlp.up_proj.weight`, n: I },
      ],
      hid,
      opts.weights,
    );
    const [gate, up] = g.opN("Split", [gateUp, g.i64([I, I])], 2, { axis: -1 }) as [string, string];
    const act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up]);
    x = g.op("Add", [x, await L.linear(act, `${p}.mlp.down_proj.weight`, c.intermediateSize, hid, opts.weights)]);
  }
  // Only the requested rows go through the final norm and lm_head: [B·T,hid] -> [R,hid] -> [R,vocab]
  const rows = g.op("Gather", [L.reshape(x, [-1, hid]), logitsIndex], { axis: 0 });
  const normed = await L.rmsNorm(rows, "llm.model.norm.weight", hid, c.rmsNormEps);
  const head = c.tieWordEmbeddings ? "llm.model.embed_tokens.weight" : "llm.lm_head.weight";
  const logits = await L.linear(normed, head, hid, c.vocabSize, opts.weights);
  g.output(logits, LLM_IO.logits, "float32", ["R", c.vocabSize]);
  return m.finish();
}

interface AttnContext {
  T1: string;
  arT: string;
  causal: string;
  pastLens: string;
  blockTables: string;
  H: number;
  KVH: number;
  D: number;
  BS: number;
}

/**
 * Loop body: attention of sequence `iter` over its paged past and its new tokens (PAGED_ATTENTION.md §3.4 iv).
 *
 * ```
 * blocks = block_tables[b][0 : max(1, ceil(past/BS))]      hidx [1,KVH,nb] = blocks·KVH + kvHead
 * kpast = Gather(kpr, hidx) -> [1,KVH,S,D]  (S = nb·BS; slots >= past are masked)
 * q [1,T,H·D] -> [1,KVH,G·T,D];  scores = [q·kpastᵀ | q·knewᵀ]/√D + mask  [1,KVH,G,T,S+T]
 * softmax -> [pp | pn];  out = pp·vpast + pn·vnew -> [T,H·D]
 * ```
 */
function pagedAttentionBody(
  b: Graph,
  ctx: AttnContext,
  qRot: string,
  kRot: string,
  v: string,
  kpr: string,
  vpr: string,
) {
  const { KVH, D, BS } = ctx;
  const G = ctx.H / KVH;
  const iter = b.input(`${b.name}_iter`, "int64", []);
  const condIn = b.input(`${b.name}_cond_in`, "bool", []);
  const bi = b.op("Unsqueeze", [iter, b.i64([0])]); // [1]
  const pick = (t: string) => b.op("Gather", [t, bi], { axis: 0 });
  const qb = pick(qRot); // [1,T,H·D]
  const kb = pick(kRot); // [1,T,KVH·D]
  const vb = pick(v);
  const plb = pick(ctx.pastLens); // [1]
  const btb = pick(ctx.blockTables); // [1,MB]
  const nblk = b.op("Max", [b.op("Div", [b.op("Add", [plb, b.i64([BS - 1])]), b.i64([BS])]), b.i64([1])]);
  const bts = b.op("Slice", [btb, b.i64([0]), nblk, b.i64([1])]); // [1,nb]
  const kvHeads = b.i64(Array.from({ length: KVH }, (_, h) => h));
  const hidx = b.op("Add", [
    b.op("Mul", [b.op("Unsqueeze", [bts, b.i64([1])]), b.i64(KVH)]),
    b.op("Reshape", [kvHeads, b.i64([1, KVH, 1])]),
  ]); // [1,KVH,nb]
  const past = (pool: string) => b.op("Reshape", [b.op("Gather", [pool, hidx], { axis: 0 }), b.i64([0, 0, -1, D])]);
  const kpast = past(kpr); // [1,KVH,S,D]
  const vpast = past(vpr);

  // Mask [1,1,T,S+T]: past slot j visible iff j < past; new token t' visible from t iff t' <= t
  const S1 = b.op("Shape", [kpast], { start: 2, end: 3 }); // [1]
  const arS = b.op("Range", [b.i64(0), b.op("Squeeze", [S1]), b.i64(1)]);
  const vP = b.op("Less", [b.op("Unsqueeze", [arS, b.i64([0, 1, 2])]), b.op("Unsqueeze", [plb, b.i64([1, 2, 3])])]);
  const vPE = b.op("Expand", [vP, b.op("Concat", [b.i64([1, 1]), ctx.T1, b.i64([1])], { axis: 0 })]); // [1,1,T,S]
  const valid = b.op("Concat", [vPE, ctx.causal], { axis: 3 });
  const mask = b.op("Where", [valid, b.f32(0), b.f32(-1e30)]); // [1,1,T,S+T]

  // q [1,T,H·D] -> [1,T,KVH,G,D] -> [1,KVH,G,T,D] -> [1,KVH,G·T,D]; query head h uses KV head h / G
  const qg = b.op("Reshape", [
    b.op("Transpose", [b.op("Reshape", [qb, b.i64([0, 0, KVH, G, D])])], { perm: [0, 2, 3, 1, 4] }),
    b.i64([0, 0, -1, D]),
  ]);
  const heads = (t: string) => b.op("Transpose", [b.op("Reshape", [t, b.i64([0, 0, KVH, D])])], { perm: [0, 2, 1, 3] }); // [1,KVH,T,D]
  const kn = heads(kb);
  const vn = heads(vb);
  const scale = { f: 1 / Math.sqrt(D) };
  const sp = b.op("FusedMatMul", [qg, kpast], { transB: 1, alpha: scale }, { domain: "com.microsoft" });
  const sn = b.op("FusedMatMul", [qg, kn], { transB: 1, alpha: scale }, { domain: "com.microsoft" });
  const sc = b.op("Concat", [sp, sn], { axis: 3 }); // [1,KVH,G·T,S+T]
  const scShape = b.op("Shape", [sc]);
  const sc5 = b.op("Reshape", [sc, b.op("Concat", [b.i64([1, KVH, G]), ctx.T1, b.i64([-1])], { axis: 0 })]);
  const p5 = b.op("Softmax", [b.op("Add", [sc5, b.op("Unsqueeze", [mask, b.i64([2])])])], { axis: -1 });
  const p = b.op("Reshape", [p5, scShape]); // [1,KVH,G·T,S+T]
  const [pp, pn] = b.opN("Split", [p, b.op("Concat", [S1, ctx.T1], { axis: 0 })], 2, { axis: 3 }) as [string, string];
  const o = b.op("Add", [b.op("MatMul", [pp, vpast]), b.op("MatMul", [pn, vn])]); // [1,KVH,G·T,D]
  // [1,KVH,G·T,D] -> [1,KVH,G,T,D] -> [1,T,KVH,G,D] -> [T,H·D]
  const o5 = b.op("Transpose", [b.op("Reshape", [o, b.i64([0, 0, G, -1, D])])], { perm: [0, 3, 1, 2, 4] });
  const out = b.op("Reshape", [o5, b.i64([-1, ctx.H * D])]);
  b.output(condIn, `${b.name}_cond_out`, "bool", []);
  b.output(out, `${b.name}_out`, "float32");
  return b;
}
