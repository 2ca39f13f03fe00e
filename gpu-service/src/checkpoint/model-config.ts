/**
 * `ModelConfig`: the architecture read from `config.json` (+ `preprocessor_config.json`) of a
 * MiniCPM-V 2.6 checkpoint (MINICPMV26.md §1), validated once on load.
 */

/** Architecture and prompt-building parameters of a checkpoint. */
export interface ModelConfig {
  llm: {
    hiddenSize: number;
    numLayers: number;
    numHeads: number;
    numKvHeads: number;
    headDim: number;
    intermediateSize: number;
    vocabSize: number;
    rmsNormEps: number;
    ropeTheta: number;
    maxPositionEmbeddings: number;
    tieWordEmbeddings: boolean;
  };
  vision: {
    hiddenSize: number;
    /** Layers actually used (and stored): `num_hidden_layers`, minus one if `drop_vision_last_layer`. */
    numLayers: number;
    numHeads: number;
    headDim: number;
    intermediateSize: number;
    patchSize: number;
    /** 980 -> a 70x70 position-embedding grid. */
    imageSize: number;
    layerNormEps: number;
  };
  resampler: { embedDim: number; numHeads: number; kvDim: number };
  /** Visual tokens per slice (64). */
  queryNum: number;
  scaleResolution: number;
  maxSliceNums: number;
  useImageId: boolean;
  bosTokenId: number;
  eosTokenId: number;
  modelName: string;
}

type Json = Record<string, unknown>;

class ConfigReader {
  constructor(
    private readonly file: string,
    private readonly obj: Json,
    private readonly prefix = "",
  ) {}

  private has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  num(key: string, opts: { int?: boolean; min?: number; default?: number } = {}): number {
    const name = this.prefix + key;
    if (!this.has(key)) {
      if (opts.default !== undefined) return opts.default;
      throw new Error(`${this.file}: missing required key ${name}`);
    }
    const v = this.obj[key];
    if (typeof v !== "number" || !Number.isFinite(v)) throw new Error(`${this.file}: ${name} must be a number`);
    if (opts.int && !Number.isSafeInteger(v)) throw new Error(`${this.file}: ${name} must be an integer, got ${v}`);
    if (opts.min !== undefined && v < opts.min)
      throw new Error(`${this.file}: ${name} must be >= ${opts.min}, got ${v}`);
    return v;
  }

  int(key: string, min = 1, def?: number): number {
    return this.num(key, def === undefined ? { int: true, min } : { int: true, min, default: def });
  }

  bool(key: string, def?: boolean): boolean {
    const name = this.prefix + key;
    if (!this.has(key)) {
      if (def !== undefined) return def;
      throw new Error(`${this.file}: missing required key ${name}`);
    }
    const v = this.obj[key];
    if (typeof v !== "boolean") throw new Error(`${this.file}: ${name} must be true or false`);
    return v;
  }

  str(key: string, def: string): string {
    const v = this.obj[key];
    if (v === undefined || v === null) return def;
    if (typeof v !== "string") throw new Error(`${this.file}: ${this.prefix + key} must be a string`);
    return v;
  }

  child(key: string, required: boolean): ConfigReader {
    const v = this.obj[key];
    if (v === undefined || v === null) {
      if (required) throw new Error(`${this.file}: missing required key ${this.prefix + key}`);
      return new ConfigReader(this.file, {}, `${this.prefix + key}.`);
    }
    if (typeof v !== "object" || Array.isArray(v))
      throw new Error(`${this.file}: ${this.prefix + key} must be an object`);
    return new ConfigReader(this.file, v as Json, `${this.prefix + key}.`);
  }

  present(key: string): boolean {
    return this.has(key);
  }

  raw(key: string): unknown {
    return this.obj[key];
  }
}

/** A single number (or the first of a list, as `eos_token_id` may be). */
function firstId(r: ConfigReader, key: string, def: number): number {
  const v = r.raw(key);
  if (Array.isArray(v) && typeof v[0] === "number") return v[0];
  return r.int(key, 0, def);
}

/**
 * Parses and validates `config.json` and `preprocessor_config.json` (file paths are used in errors).
 * Keys that the real config leaves to class defaults (vision layer_norm_eps, scale_resolution ...)
 * get those defaults; the sizes are required.
 */
export function parseModelConfig(
  configJson: Json,
  preprocessorJson: Json | null,
  files: { config: string; preprocessor: string },
  defaultName = "minicpmv",
): ModelConfig {
  const c = new ConfigReader(files.config, configJson);
  const v = c.child("vision_config", true);
  const slice = c.child("slice_config", false);

  const hiddenSize = c.int("hidden_size");
  const numHeads = c.int("num_attention_heads");
  const numKvHeads = c.int("num_key_value_heads", 1, numHeads);
  const headDim = c.int("head_dim", 1, hiddenSize / numHeads);
  if (hiddenSize % numHeads !== 0 && !c.present("head_dim")) {
    throw new Error(`${files.config}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  }
  if (numHeads % numKvHeads !== 0) {
    throw new Error(
      `${files.config}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  }
  if (hiddenSize % 128 !== 0) {
    throw new Error(`${files.config}: hidden_size ${hiddenSize} must be a multiple of 128 (resampler heads of 128)`);
  }

  const vHidden = v.int("hidden_size");
  const vHeads = v.int("num_attention_heads");
  if (vHidden % vHeads !== 0) {
    throw new Error(
      `${files.config}: vision_config.hidden_size ${vHidden} is not a multiple of num_attention_heads ${vHeads}`,
    );
  }
  const dropLast = c.bool("drop_vision_last_layer", false);
  const vLayers = v.int("num_hidden_layers") - (dropLast ? 1 : 0);
  if (vLayers < 1) throw new Error(`${files.config}: vision tower has no layers left after drop_vision_last_layer`);

  const queryNum = c.int("query_num");
  const patchSize = c.int("patch_size", 1, v.int("patch_size", 1, 14));
  const useImageId = c.bool("use_image_id", true);
  const maxSliceNums = slice.int("max_slice_nums", 1, 9);
  const sliceMode = c.bool("slice_mode", true);
  let scaleResolution = slice.int("scale_resolution", 1, c.int("image_size", 1, 448));

  if (preprocessorJson) {
    const p = new ConfigReader(files.preprocessor, preprocessorJson);
    // chat() asserts that these agree between the two files (MINICPMV26.md §1.5).
    const agree = (key: string, mine: number | boolean, theirs: number | boolean | undefined) => {
      if (theirs !== undefined && theirs !== mine) {
        throw new Error(`${files.preprocessor}: ${key} is ${theirs} but ${files.config} says ${mine}`);
      }
    };
    agree("image_feature_size", queryNum, p.present("image_feature_size") ? p.int("image_feature_size") : undefined);
    agree("patch_size", patchSize, p.present("patch_size") ? p.int("patch_size") : undefined);
    agree("use_image_id", useImageId, p.present("use_image_id") ? p.bool("use_image_id") : undefined);
    agree("max_slice_nums", maxSliceNums, p.present("max_slice_nums") ? p.int("max_slice_nums") : undefined);
    agree("slice_mode", sliceMode, p.present("slice_mode") ? p.bool("slice_mode") : undefined);
    scaleResolution = p.int("scale_resolution", 1, scaleResolution);
  }

  return {
    llm: {
      hiddenSize,
      numLayers: c.int("num_hidden_layers"),
      numHeads,
      numKvHeads,
      headDim,
      intermediateSize: c.int("intermediate_size"),
      vocabSize: c.int("vocab_size"),
      rmsNormEps: c.num("rms_norm_eps", { min: 0, default: 1e-6 }),
      ropeTheta: c.num("rope_theta", { min: 1, default: 1e6 }),
      maxPositionEmbeddings: c.int("max_position_embeddings"),
      tieWordEmbeddings: c.bool("tie_word_embeddings", false),
    },
    vision: {
      hiddenSize: vHidden,
      numLayers: vLayers,
      numHeads: vHeads,
      headDim: vHidden / vHeads,
      intermediateSize: v.int("intermediate_size"),
      patchSize: v.int("patch_size"),
      imageSize: v.int("image_size"),
      layerNormEps: v.num("layer_norm_eps", { min: 0, default: 1e-6 }),
    },
    resampler: { embedDim: hiddenSize, numHeads: hiddenSize / 128, kvDim: vHidden },
    queryNum,
    scaleResolution,
    maxSliceNums,
    useImageId,
    bosTokenId: firstId(c, "bos_token_id", 151643),
    eosTokenId: firstId(c, "eos_token_id", 151645),
    modelName: c.str("_name_or_path", defaultName),
  };
}
