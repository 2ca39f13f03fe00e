/**
 * gpu-service: the MiniCPM-V 2.6 generation engine (paged KV cache, prefix and vision caching,
 * continuous batching, sampling) and its gRPC server.
 */

export { type GpuServiceConfig, loadConfig } from "./config";
export { BeamSearch, type Hypothesis } from "./engine/beam-search";
export { BlockPool } from "./engine/block-pool";
export { EncoderCache } from "./engine/encoder-cache";
export { Engine, type EngineConfig, TERMINATORS } from "./engine/engine";
export { type EngineHandle, EventStream, LocalEngine } from "./engine/engine-handle";
export {
  type BlockCopy,
  type CachedPrefix,
  KVCacheManager,
  type KvSeq,
  type MediaSpan,
} from "./engine/kv-cache-manager";
export { OutputText } from "./engine/output-text";
export { Rng, sampleToken } from "./engine/sampler";
export { Scheduler, type SchedulerConfig, type SchedulerOutput } from "./engine/scheduler";
export * from "./engine/types";
export { GpuMetrics, type MetricsSource, type RequestObserver } from "./metrics";
export { contentHash, REFERENCE_DEFAULTS, startGrpcServer, toEngineRequest } from "./service";
export { recordRequestSpans, recordStep, SPAN as GPU_SPAN, traceLinkOf } from "./tracing";
export { WorkerEngine, type WorkerOptions } from "./worker";
