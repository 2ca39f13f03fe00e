import type { ModelConfig } from "./model-config";

/** Name and shape of one checkpoint tensor. */
export interface TensorShape {
  name: string;
  shape: number[];
}

/**
 * Every tensor of the MiniCPM-V 2.6 architecture for `cfg`, with upstream names
 * (MINICPMV26.md §1.3), in module order: LLM, vision tower, resampler.
 */
export function expectedTensors(cfg: ModelConfig): TensorShape[] {
  const { llm, vision, resampler } = cfg;
  const h = llm.hiddenSize;
  const qDim = llm.numHeads * llm.headDim;
  const kvDim = llm.numKvHeads * llm.headDim;
  const out: TensorShape[] = [];
  const add = (name: string, ...shape: number[]) => out.push({ name, shape });

  add("llm.model.embed_tokens.weight", llm.vocabSize, h);
  for (let i = 0; i < llm.numLayers; i++) {
    const p = `llm.model.layers.${i}`;
    add(`${p}.self_attn.q_proj.weight`, qDim, h);
    add(`${p}.self_attn.q_proj.bias`, qDim);
    add(`${p}.self_attn.k_proj.weight`, kvDim, h);
    add(`${p}.self_attn.k_proj.bias`, kvDim);
    add(`${p}.self_attn.v_proj.weight`, kvDim, h);
    add(`${p}.self_attn.v_proj.bias`, kvDim);
    add(`${p}.self_attn.o_proj.weight`, h, qDim);
    add(`${p}.mlp.gate_proj.weight`, llm.intermediateSize, h);
    add(`${p}.mlp.up_proj.weight`, llm.intermediateSize, h);
    add(`${p}.mlp.down_proj.weight`, h, llm.intermediateSize);
    add(`${p}.input_layernorm.weight`, h);
    add(`${p}.post_attention_layernorm.weight`, h);
  }
  add("llm.model.norm.weight", h);
  // NOTE: with tie_word_embeddings the head reuses embed_tokens and is not stored.
  if (!llm.tieWordEmbeddings) add("llm.lm_head.weight", llm.vocabSize, h);

  const vh = vision.hiddenSize;
  const grid = Math.floor(vision.imageSize / vision.patchSize);
  add("vpm.embeddings.patch_embedding.weight", vh, 3, vision.patchSize, vision.patchSize);
  add("vpm.embeddings.patch_embedding.bias", vh);
  add("vpm.embeddings.position_embedding.weight", grid * grid, vh);
  for (let i = 0; i < vision.numLayers; i++) {
    const p = `vpm.encoder.layers.${i}`;
    for (const proj of ["k_proj", "v_proj", "q_proj", "out_proj"]) {
      add(`${p}.self_attn.${proj}.weight`, vh, vh);
      add(`${p}.self_attn.${proj}.bias`, vh);
    }
    add(`${p}.layer_norm1.weight`, vh);
    add(`${p}.layer_norm1.bias`, vh);
    add(`${p}.mlp.fc1.weight`, vision.intermediateSize, vh);
    add(`${p}.mlp.fc1.bias`, vision.intermediateSize);
    add(`${p}.mlp.fc2.weight`, vh, vision.intermediateSize);
    add(`${p}.mlp.fc2.bias`, vh);
    add(`${p}.layer_norm2.weight`, vh);
    add(`${p}.layer_norm2.bias`, vh);
  }
  add("vpm.post_layernorm.weight", vh);
  add("vpm.post_layernorm.bias", vh);

  const e = resampler.embedDim;
  add("resampler.query", cfg.queryNum, e);
  add("resampler.proj", e, e);
  // NOTE: upstream uses nn.Identity (no tensor) when the vision width equals the LLM width.
  if (resampler.kvDim !== e) add("resampler.kv_proj.weight", e, resampler.kvDim);
  add("resampler.attn.in_proj_weight", 3 * e, e);
  add("resampler.attn.in_proj_bias", 3 * e);
  add("resampler.attn.out_proj.weight", e, e);
  add("resampler.attn.out_proj.bias", e);
  for (const ln of ["ln_q", "ln_kv", "ln_post"]) {
    add(`resampler.${ln}.weight`, e);
    add(`resampler.${ln}.bias`, e);
  }
  return out;
}
