/** The edge gateway's public surface: the app factory, its config, the backend clients and the pool. */
export { type AppDeps, createApp, DEFAULT_MODEL_NAME } from "./app";
export { GrpcGenerationBackend } from "./backends/generation-client";
export { GpuPool } from "./backends/gpu-pool";
export { GrpcPreprocessBackend } from "./backends/preprocess-client";
export type * from "./backends/types";
export { type EdgeConfig, loadConfig } from "./config";
export { EdgeError, httpError } from "./errors";
export { EdgeMetrics } from "./metrics";
