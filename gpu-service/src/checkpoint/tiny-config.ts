/**
 * Sizes of generated checkpoints (TINY_MODEL.md §4) and the JSON files that describe them.
 * Every key not listed here is as in the real MiniCPM-V 2.6 `config.json`.
 */

/** The free sizes of a generated checkpoint. */
export interface TinyConfig {
  /** Written as `_name_or_path`. */
  name: string;
  /** Default seed of this configuration (TINY_MODEL.md §4). */
  seed: number;
  llm: { hiddenSize: number; numLayers: number; numHeads: number; numKvHeads: number; intermediateSize: number };
  vision: { hiddenSize: number; numLayers: number; numHeads: number; intermediateSize: number };
}

/**
 * Named configurations:
 * - `tiny-a`: the golden test model (TINY_MODEL.md §4).
 * - `qwen2-0.5b`: Qwen2-0.5B's exact LLM shape (896 = 7 x 128 is a legal resampler width, 7 heads;
 *   LLM head_dim 64) with the full SigLIP-400M tower; for benchmarks.
 * - `minicpmv-2_6`: the full MiniCPM-V 2.6 shapes (Qwen2-7B + SigLIP-400M, ~8.1B parameters, ~16 GB).
 */
export const PRESETS = {
  "tiny-a": {
    name: "tiny-a",
    seed: 20240806,
    llm: { hiddenSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 256 },
    vision: { hiddenSize: 64, numLayers: 2, numHeads: 2, intermediateSize: 128 },
  },
  "qwen2-0.5b": {
    name: "qwen2-0.5b",
    seed: 20240806,
    llm: { hiddenSize: 896, numLayers: 24, numHeads: 14, numKvHeads: 2, intermediateSize: 4864 },
    vision: { hiddenSize: 1152, numLayers: 27, numHeads: 16, intermediateSize: 4304 },
  },
  "minicpmv-2_6": {
    name: "minicpmv-2_6",
    seed: 20240806,
    llm: { hiddenSize: 3584, numLayers: 28, numHeads: 28, numKvHeads: 4, intermediateSize: 18944 },
    vision: { hiddenSize: 1152, numLayers: 27, numHeads: 16, intermediateSize: 4304 },
  },
} as const satisfies Record<string, TinyConfig>;

export type PresetName = keyof typeof PRESETS;

export function isPresetName(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}

/** Checks the constraints of TINY_MODEL.md §4; errors name the field and the rule. */
export function validateTinyConfig(c: TinyConfig): void {
  const positive: [string, number][] = [
    ["llm.hiddenSize", c.llm.hiddenSize],
    ["llm.numLayers", c.llm.numLayers],
    ["llm.numHeads", c.llm.numHeads],
    ["llm.numKvHeads", c.llm.numKvHeads],
    ["llm.intermediateSize", c.llm.intermediateSize],
    ["vision.hiddenSize", c.vision.hiddenSize],
    ["vision.numLayers", c.vision.numLayers],
    ["vision.numHeads", c.vision.numHeads],
    ["vision.intermediateSize", c.vision.intermediateSize],
  ];
  for (const [field, v] of positive) {
    if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${field} must be a positive integer, got ${v}`);
  }
  if (!Number.isSafeInteger(c.seed) || c.seed < 0 || c.seed > 0xffffffff) {
    throw new Error(`seed must be an integer in [0, 4294967295], got ${c.seed}`);
  }
  const { llm, vision } = c;
  if (llm.hiddenSize % 128 !== 0) {
    throw new Error(`llm.hiddenSize must be a multiple of 128 (resampler heads of 128), got ${llm.hiddenSize}`);
  }
  if (llm.hiddenSize % llm.numHeads !== 0) {
    throw new Error(`llm.hiddenSize ${llm.hiddenSize} must be a multiple of llm.numHeads ${llm.numHeads}`);
  }
  if ((llm.hiddenSize / llm.numHeads) % 16 !== 0) {
    throw new Error(`llm head size ${llm.hiddenSize / llm.numHeads} must be a multiple of 16 (fused rotary attention)`);
  }
  if (llm.numHeads % llm.numKvHeads !== 0) {
    throw new Error(`llm.numHeads ${llm.numHeads} must be a multiple of llm.numKvHeads ${llm.numKvHeads}`);
  }
  if (vision.hiddenSize % vision.numHeads !== 0) {
    throw new Error(`vision.hiddenSize ${vision.hiddenSize} must be a multiple of vision.numHeads ${vision.numHeads}`);
  }
}

/** `config.json` for a generated checkpoint (same keys as the real one, sorted like transformers writes them). */
export function buildConfigJson(c: TinyConfig): Record<string, unknown> {
  return {
    _name_or_path: c.name,
    architectures: ["MiniCPMV"],
    attention_dropout: 0.0,
    auto_map: {
      AutoConfig: "configuration_minicpm.MiniCPMVConfig",
      AutoModel: "modeling_minicpmv.MiniCPMV",
      AutoModelForCausalLM: "modeling_minicpmv.MiniCPMV",
    },
    batch_vision_input: true,
    bos_token_id: 151643,
    drop_vision_last_layer: false,
    eos_token_id: 151645,
    hidden_act: "silu",
    hidden_size: c.llm.hiddenSize,
    image_size: 448,
    initializer_range: 0.02,
    intermediate_size: c.llm.intermediateSize,
    max_position_embeddings: 32768,
    max_window_layers: 28,
    model_type: "minicpmv",
    num_attention_heads: c.llm.numHeads,
    num_hidden_layers: c.llm.numLayers,
    num_key_value_heads: c.llm.numKvHeads,
    patch_size: 14,
    query_num: 64,
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    rope_theta: 1000000.0,
    slice_config: { max_slice_nums: 9, model_type: "minicpmv" },
    slice_mode: true,
    sliding_window: 131072,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    transformers_version: "4.40.0",
    use_cache: true,
    use_image_id: true,
    use_sliding_window: false,
    version: 2.6,
    vision_batch_size: 16,
    vision_config: {
      hidden_act: "gelu_pytorch_tanh",
      hidden_size: c.vision.hiddenSize,
      image_size: 980,
      intermediate_size: c.vision.intermediateSize,
      layer_norm_eps: 1e-6,
      model_type: "siglip",
      num_attention_heads: c.vision.numHeads,
      num_hidden_layers: c.vision.numLayers,
      patch_size: 14,
    },
    vocab_size: 151666,
  };
}

/** `preprocessor_config.json` (MINICPMV26.md §1.5). */
export function buildPreprocessorConfigJson(): Record<string, unknown> {
  return {
    image_processor_type: "MiniCPMVImageProcessor",
    auto_map: {
      AutoProcessor: "processing_minicpmv.MiniCPMVProcessor",
      AutoImageProcessor: "image_processing_minicpmv.MiniCPMVImageProcessor",
    },
    processor_class: "MiniCPMVProcessor",
    max_slice_nums: 9,
    scale_resolution: 448,
    patch_size: 14,
    use_image_id: true,
    image_feature_size: 64,
    im_start: "<image>",
    im_end: "</image>",
    slice_start: "<slice>",
    slice_end: "</slice>",
    unk: "<unk>",
    im_id_start: "<image_id>",
    im_id_end: "</image_id>",
    slice_mode: true,
    norm_mean: [0.5, 0.5, 0.5],
    norm_std: [0.5, 0.5, 0.5],
    version: 2.6,
  };
}

/** `generation_config.json` (MINICPMV26.md §1.6). */
export function buildGenerationConfigJson(): Record<string, unknown> {
  return { _from_model_config: true, bos_token_id: 151643, eos_token_id: 151645, transformers_version: "4.40.0" };
}
