/**
 * GPU-service configuration: every setting, its environment variable and its default, parsed once at
 * start-up. No other file reads `process.env`.
 */

/** The gpu-service's settings. */
export interface GpuServiceConfig {
  /** `GPU_SERVICE_HOST` (default "127.0.0.1"): interface the gRPC server binds. */
  host: string;
  /** `GPU_SERVICE_PORT` (default 50062): gRPC port (0 picks a free one). */
  port: number;
  /** `GPU_METRICS_PORT` (default 9462): Prometheus `/metrics` HTTP port (0 picks a free one). */
  metricsPort: number;
  /** `GPU_METRICS_HOST` (default "0.0.0.0"): interface the metrics server binds. */
  metricsHost: string;
  /** `MODEL_DIR` (default empty = generate/reuse `<CACHE_DIR>/checkpoints/tiny-a`): checkpoint directory. */
  modelDir: string;
  /** `CACHE_DIR` (default empty = `<repo>/.cache`): where built ONNX graphs and the tiny checkpoint live. */
  cacheDir: string;
  /** `MODEL_NAME` (default empty = the checkpoint's name): the model name reported by Info. */
  modelName: string;
  /** `KV_BLOCK_SIZE` (default 16): tokens per KV block. */
  blockSize: number;
  /** `KV_NUM_BLOCKS` (default 0 = from KV_CACHE_BYTES): KV blocks in the pool. */
  numBlocks: number;
  /** `KV_CACHE_BYTES` (default 536870912 = 512 MiB): KV pool size when KV_NUM_BLOCKS is 0. */
  kvCacheBytes: number;
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
    metricsHost: env.GPU_METRICS_HOST ?? "0.0.0.0",
    modelDir: env.MODEL_DIR ?? "",
    cacheDir: env.CACHE_DIR ?? "",
    modelName: env.MODEL_NAME ?? "",
    blockSize: int(env, "KV_BLOCK_SIZE", 16, 1),
    numBlocks: int(env, "KV_NUM_BLOCKS", 0, 0),
    kvCacheBytes: int(env, "KV_CACHE_BYTES", 512 * 1024 * 1024, 1),
    maxBatchTokens: int(env, "MAX_BATCH_TOKENS", 2048, 1),
    maxRunning: int(env, "MAX_RUNNING_SEQS", 64, 1),
    maxWaiting: int(env, "MAX_WAITING_REQUESTS", 256, 0),
    encoderCacheBytes: int(env, "ENCODER_CACHE_BYTES", 256 * 1024 * 1024, 0),
    enablePrefixCaching: bool(env, "ENABLE_PREFIX_CACHING", true),
    weights: oneOf(env, "WEIGHTS", "f32", ["f32", "f16", "int4"] as const),
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
