/**
 * Checkpoints: loading MiniCPM-V 2.6 directories (Hugging Face layout, safetensors, BF16/F16/F32)
 * and generating deterministic ones of the same architecture (TINY_MODEL.md); downloading real ones
 * from the Hugging Face Hub.
 */

export { type Checkpoint, loadCheckpoint } from "./checkpoint";
export { type Dtype, SUPPORTED_DTYPES } from "./dtype";
export { DEFAULT_CACHE_DIR, ensureTinyCheckpoint } from "./ensure-tiny";
export { expectedTensors, type TensorShape } from "./expected-tensors";
export {
  fnv1a32,
  generateCheckpoint,
  generateTensorBf16,
  resolveTinyConfig,
  tensorSeed,
  tinyTensors,
  uniformAt,
  valueRule,
} from "./generator";
export {
  DEFAULT_HUB_ENDPOINT,
  downloadFromHub,
  ensureHubSnapshot,
  type HubDownloadOptions,
  HubError,
  type HubErrorCode,
  type HubProgress,
  hubEnv,
  selectCheckpointFiles,
  validateRepo,
  validateRevision,
} from "./hub";
export { hubCacheDir, isSnapshotDir, readRef, repoFolder, snapshotDir } from "./hub-cache";
export { type ModelConfig, parseModelConfig } from "./model-config";
export { buildHeader, type TensorSpec, writeSafetensors } from "./safetensors";
export {
  buildConfigJson,
  buildGenerationConfigJson,
  buildPreprocessorConfigJson,
  isPresetName,
  PRESETS,
  type PresetName,
  type TinyConfig,
  validateTinyConfig,
} from "./tiny-config";
