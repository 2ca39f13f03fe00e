/**
 * GPU-service configuration: every setting, its environment variable and its default, parsed once at
 * start-up. No other file reads `process.env`.
 */
import { hubCacheDir } from "./checkpoint/hub-cache";

/** The gpu-service's settings. */
export interface GpuServiceConfig {
  /** `GPU_SERVICE_HOST` (default "127.0.0.1"): interface the gRPC server binds. */
  host: string;
  /** `GPU_SERVICE_PORT` (default 50062): gRPC port (0 picks a free one). */
  port: number;
  /** `GPU_METRICS_PORT` (default 9462): Prometheus `/metrics` HTTP port (0 picks a free one). */
  metricsPort: number;
  /**
   * `GPU_METRICS_HOST` (default "127.0.0.1"): interface the metrics server binds; loopback unless asked (the
   * container image and the Helm chart set 0.0.0.0 for the cluster's scraper).
   */
  metricsHost: string;
  /**
   * `MODEL_DIR` (default empty): checkpoint directory. When empty: MODEL_ID's snapshot in the Hugging Face hub
   * cache, else the generated `<CACHE_DIR>/checkpoints/tiny-a`.
   */
  modelDir: string;
  /**
   * `MODEL_ID` (default empty): a Hugging Face Hub model id (e.g. `openbmb/MiniCPM-V-2_6`), served from its
   * snapshot in the hub cache (`HF_HUB_CACHE`), downloaded there first when missing (unless `HF_HUB_OFFLINE`).
   */
  modelId: string;
  /** `MODEL_REVISION` (default "main"): branch, tag or commit of MODEL_ID. */
  modelRevision: string;
  /**
   * The Hugging Face hub cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`,
   * else `~/.cache/huggingface/hub` (where `hf download` and vLLM keep models).
   */
  hfHubCache: string;
  /** `HF_HUB_OFFLINE` (default false): never contact the Hub; MODEL_ID must already be in the cache. */
  hfHubOffline: boolean;
  /** `HF_TOKEN` (default empty): token for gated or private repositories. */
  hfToken: string;
  /** `HF_ENDPOINT` (default https://huggingface.co): the Hub or a mirror. */
  hfEndpoint: string;
  /** `CACHE_DIR` (default empty = `<repo>/.cache`): where built ONNX graphs and the tiny checkpoint live. */
  cacheDir: string;
  /** `MODEL_NAME` (default empty = the checkpoint's name): the model name reported by Info. */
  modelName: string;
  /** `KV_BLOCK_SIZE` (default 16): tokens per KV block. */
  blockSize: number;
  /** `KV_NUM_BLOCKS` (default 0 = from KV_CACHE_BYTES): KV blocks in the pool. */
  numBlocks: number;
  /** `KV_CACHE_BYTES` (default 536870912 = 512 MiB): KV pool size when KV_NUM_BLOCKS and the fraction are unset. */
  kvCacheBytes: number;
  /**
   * `KV_CACHE_MEMORY_FRACTION`, or vLLM's name `GPU_MEMORY_UTILIZATION` (default 0 = use KV_CACHE_BYTES): the
   * share of the container's memory limit the process may use; the KV pool gets what the loaded model leaves
   * of it (memory-budget.ts). KV_NUM_BLOCKS still wins.
   */
  kvCacheMemoryFraction: number;
  /** `MAX_BATCH_TOKENS` (default 2048): token budget of one step (prefill chunks + decodes). */
  maxBatchTokens: number;
  /** `MAX_RUNNING_SEQS` (default 64): sequences running at once. */
  maxRunning: number;
  /** `MAX_WAITING_REQUESTS` (default 256): waiting requests; more are refused with RESOURCE_EXHAUSTED. */
  maxWaiting: number;
  /** `ENCODER_CACHE_BYTES` (default 268435456 = 256 MiB): vision-embedding cache budget. */
  encoderCacheBytes: number;
  /** `ENABLE_PREFIX_CACHING` (default true): share KV blocks of common prefixes between requests. */
  enablePrefixCaching: boolean;
  /** `WEIGHTS` (default "f32"): LLM weight storage: f32, f16 or int4. */
  weights: "f32" | "f16" | "int4";
  /**
   * `VISION_PRECISION` (default "f32"): vision tower numerics. `int8` runs the SigLIP encoder's linear layers
   * on int8 weights (DynamicQuantizeMatMul): about 3x less CPU per slice, embeddings within cosine ~0.9999 of
   * f32. Opt-in, like WEIGHTS=int4: a quantized model is never served unless asked for.
   */
  visionPrecision: "f32" | "int8";
  /** `EXECUTION_PROVIDER` (default "cpu"): ONNX Runtime provider: cpu, webgpu or cuda. */
  executionProvider: "cpu" | "webgpu" | "cuda";
  /** `INTRA_OP_THREADS` (default 0 = ONNX Runtime's choice): threads per ONNX Runtime op, both sessions. */
  intraOpThreads: number;
  /** `VISION_THREADS` (default 0 = INTRA_OP_THREADS): intra-op threads of the vision tower's session. */
  visionThreads: number;
  /** `LLM_THREADS` (default 0 = INTRA_OP_THREADS): intra-op threads of the LLM's session. */
  llmThreads: number;
  /** `VISION_ALLOW_SPINNING` (default false): idle vision threads busy-wait for work (ORT allow_spinning). */
  visionSpinning: boolean;
  /** `LLM_ALLOW_SPINNING` (default false): idle LLM threads busy-wait for work (ORT allow_spinning). */
  llmSpinning: boolean;
  /** `VISION_SLICES_PER_STEP` (default 1): image slices encoded per engine step, between decode steps. */
  visionSlicesPerStep: number;
  /** `MAX_N` (default 16): largest n and beam width accepted. */
  maxN: number;
  /** `GRPC_MAX_MESSAGE_BYTES` (default 268435456 = 256 MiB): largest gRPC message sent or received. */
  grpcMaxMessageBytes: number;
  /** `SHUTDOWN_GRACE_MS` (default 10000): on SIGTERM, how long in-flight requests may finish before being cancelled. */
  shutdownGraceMs: number;
  /** `LOG_LEVEL` (default "info"): pino log level. */
  logLevel: string;
}

function int(env: NodeJS.ProcessEnv, name: string, def: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return def;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer >= ${min}, got "${raw}"`);
  return v;
}

function fraction(env: NodeJS.ProcessEnv, names: string[]): number {
  for (const name of names) {
    const raw = env[name];
    if (raw === undefined || raw.trim() === "") continue;
    const v = Number(raw);
    if (!Number.isFinite(v) || v <= 0 || v > 1) throw new Error(`${name} must be a number in (0, 1], got "${raw}"`);
    return v;
  }
  return 0;
}

function oneOf<T extends string>(env: NodeJS.ProcessEnv, name: string, def: T, allowed: readonly T[]): T {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return def;
  if (!(allowed as readonly string[]).includes(raw))
    throw new Error(`${name} must be one of ${allowed.join(", ")}, got "${raw}"`);
  return raw as T;
}

function bool(env: NodeJS.ProcessEnv, name: string, def: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return def;
  if (["1", "true", "yes"].includes(raw.toLowerCase())) return true;
  if (["0", "false", "no"].includes(raw.toLowerCase())) return false;
  throw new Error(`${name} must be true or false, got "${raw}"`);
}

/** Parses the gpu-service's settings from `env` (normally `process.env`); throws naming the bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): GpuServiceConfig {
  return {
    host: env.GPU_SERVICE_HOST ?? "127.0.0.1",
    port: int(env, "GPU_SERVICE_PORT", 50062, 0),
    metricsPort: int(env, "GPU_METRICS_PORT", 9462, 0),
    metricsHost: env.GPU_METRICS_HOST || "127.0.0.1",
    modelDir: env.MODEL_DIR ?? "",
    modelId: env.MODEL_ID ?? "",
    modelRevision: env.MODEL_REVISION || "main",
    hfHubCache: hubCacheDir(env),
    hfHubOffline: bool(env, "HF_HUB_OFFLINE", false),
    hfToken: env.HF_TOKEN ?? "",
    hfEndpoint: env.HF_ENDPOINT ?? "",
    cacheDir: env.CACHE_DIR ?? "",
    modelName: env.MODEL_NAME ?? "",
    blockSize: int(env, "KV_BLOCK_SIZE", 16, 1),
    numBlocks: int(env, "KV_NUM_BLOCKS", 0, 0),
    kvCacheBytes: int(env, "KV_CACHE_BYTES", 512 * 1024 * 1024, 1),
    kvCacheMemoryFraction: fraction(env, ["KV_CACHE_MEMORY_FRACTION", "GPU_MEMORY_UTILIZATION"]),
    maxBatchTokens: int(env, "MAX_BATCH_TOKENS", 2048, 1),
    maxRunning: int(env, "MAX_RUNNING_SEQS", 64, 1),
    maxWaiting: int(env, "MAX_WAITING_REQUESTS", 256, 0),
    encoderCacheBytes: int(env, "ENCODER_CACHE_BYTES", 256 * 1024 * 1024, 0),
    enablePrefixCaching: bool(env, "ENABLE_PREFIX_CACHING", true),
    weights: oneOf(env, "WEIGHTS", "f32", ["f32", "f16", "int4"] as const),
    visionPrecision: oneOf(env, "VISION_PRECISION", "f32", ["f32", "int8"] as const),
    executionProvider: oneOf(env, "EXECUTION_PROVIDER", "cpu", ["cpu", "webgpu", "cuda"] as const),
    intraOpThreads: int(env, "INTRA_OP_THREADS", 0, 0),
    visionThreads: int(env, "VISION_THREADS", 0, 0),
    llmThreads: int(env, "LLM_THREADS", 0, 0),
    visionSpinning: bool(env, "VISION_ALLOW_SPINNING", false),
    llmSpinning: bool(env, "LLM_ALLOW_SPINNING", false),
    visionSlicesPerStep: int(env, "VISION_SLICES_PER_STEP", 1, 1),
    maxN: int(env, "MAX_N", 16, 1),
    grpcMaxMessageBytes: int(env, "GRPC_MAX_MESSAGE_BYTES", 256 * 1024 * 1024, 4 * 1024 * 1024),
    shutdownGraceMs: int(env, "SHUTDOWN_GRACE_MS", 10_000, 0),
    logLevel: env.LOG_LEVEL ?? "info",
  };
}
