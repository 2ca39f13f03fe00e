/**
 * Starts the gpu-service: the gRPC server first (health NOT_SERVING while the model loads) and the metrics
 * port (`/metrics`, and `/health` saying what is loading), then the checkpoint (MODEL_DIR; else MODEL_ID's
 * snapshot in the Hugging Face hub cache, downloaded when missing; else the tiny test checkpoint), then the
 * engine worker (model + engine loop); logs `{"msg":"ready"}` once serving. Downloads and load phases show
 * progress bars on a terminal and structured `progress` lines otherwise (progress.ts).
 *
 * SIGTERM/SIGINT: health goes NOT_SERVING, the server stops accepting calls, in-flight requests may finish
 * for SHUTDOWN_GRACE_MS, the rest are cancelled (their KV blocks freed), the worker is closed, exit 0.
 * An engine-fatal error (broken invariant, failed model step) logs it, goes NOT_SERVING and exits 1.
 */

import { startTelemetry, traceLogFields } from "@minicpmv/proto/telemetry";
import pino from "pino";
import { ensureHubSnapshot, ensureTinyCheckpoint } from "./checkpoint";
import { type GpuServiceConfig, loadConfig } from "./config";
import { GpuMetrics } from "./metrics";
import { fromHubProgress, ProgressReporter } from "./progress";
import { startGrpcServer } from "./service";
import { WorkerEngine } from "./worker";

async function main(): Promise<void> {
  const config = loadConfig();
  const telemetry = startTelemetry({ serviceName: "gpu-service" });
  const logger = pino({ level: config.logLevel, base: { service: "gpu-service" }, mixin: traceLogFields });
  const grpcServer = await startGrpcServer({
    host: config.host,
    port: config.port,
    maxMessageBytes: config.grpcMaxMessageBytes,
    limits: { maxN: config.maxN },
  });
  const progress = new ProgressReporter({ logger });
  const banner = loadingBanner(config);
  let state: "loading" | "ready" | "stopping" = "loading";
  let readyInfo: Record<string, unknown> = {};
  const m = await telemetry.serveMetrics(config.metricsPort, config.metricsHost, {
    "/health": () =>
      state === "ready"
        ? { status: 200, body: { status: "ok", ...readyInfo } }
        : { status: 503, body: { status: state, ...banner, loading: progress.active() } },
  });
  logger.info({ ...banner, grpc_port: grpcServer.port, metrics_port: m.port }, "loading the model");

  const modelDir = await resolveModelDir(config, progress);
  const engine = await WorkerEngine.start(
    {
      model: {
        modelDir,
        ...(config.cacheDir ? { cacheDir: config.cacheDir } : {}),
        blockSize: config.blockSize,
        ...(config.numBlocks > 0
          ? { numBlocks: config.numBlocks }
          : config.kvCacheMemoryFraction > 0
            ? { kvCacheMemoryFraction: config.kvCacheMemoryFraction }
            : { kvCacheBytes: config.kvCacheBytes }),
        weights: config.weights,
        visionPrecision: config.visionPrecision,
        executionProvider: config.executionProvider,
        ...(config.intraOpThreads > 0 ? { intraOpThreads: config.intraOpThreads } : {}),
        ...(config.visionThreads > 0 ? { visionThreads: config.visionThreads } : {}),
        ...(config.llmThreads > 0 ? { llmThreads: config.llmThreads } : {}),
        visionSpinning: config.visionSpinning,
        llmSpinning: config.llmSpinning,
      },
      engine: {
        maxBatchTokens: config.maxBatchTokens,
        maxRunning: config.maxRunning,
        maxWaiting: config.maxWaiting,
        encoderCacheBytes: config.encoderCacheBytes,
        enablePrefixCaching: config.enablePrefixCaching,
        visionSlicesPerStep: config.visionSlicesPerStep,
      },
      traceSteps: telemetry.tracing,
    },
    (u) => progress.update(u),
  );
  progress.stop();
  const info = { ...engine.info, modelName: config.modelName || engine.info.modelName };
  const metrics = new GpuMetrics(info.modelName, { source: telemetry });
  metrics.watch(() => engine.stats());
  grpcServer.attach(engine, {
    metrics,
    modelName: info.modelName,
    tracer: telemetry.tracing ? telemetry.tracer : undefined,
  });
  grpcServer.setServing(true);
  readyInfo = {
    model: info.modelName,
    model_dir: modelDir,
    kv_blocks: info.numBlocks,
    block_size: info.blockSize,
    kv_bytes_per_token: info.kvBytesPerToken,
    kv_cache_bytes: info.numBlocks * info.blockSize * info.kvBytesPerToken,
    context_length: info.contextLength,
  };
  state = "ready";
  logger.info({ grpc_port: grpcServer.port, metrics_port: m.port, ...readyInfo, tracing: telemetry.tracing }, "ready");

  let stopping = false;
  const stop = async (reason: string, code: number) => {
    if (stopping) return;
    stopping = true;
    state = "stopping";
    logger.info({ reason, grace_ms: config.shutdownGraceMs }, "shutting down");
    grpcServer.setServing(false);
    await grpcServer.stop(config.shutdownGraceMs);
    await engine.close().catch(() => {});
    await m.close();
    // Flush the last spans (bounded: a dead collector must not block shutdown).
    await Promise.race([telemetry.shutdown(), new Promise((r) => setTimeout(r, 2000))]);
    logger.info("stopped");
    logger.flush();
    process.exit(code);
  };
  engine.onFatal = (err) => {
    logger.fatal({ err: err.message }, "engine stopped: its KV state can no longer be trusted");
    void stop("engine fatal", 1);
  };
  process.on("SIGTERM", () => void stop("SIGTERM", 0));
  process.on("SIGINT", () => void stop("SIGINT", 0));
}

/** What the start banner says is about to load. */
function loadingBanner(config: GpuServiceConfig): Record<string, unknown> {
  const model = config.modelDir
    ? { model_dir: config.modelDir }
    : config.modelId
      ? { model_id: config.modelId, revision: config.modelRevision, hf_hub_cache: config.hfHubCache }
      : { model: "tiny-a (generated test checkpoint, random weights)" };
  const kv =
    config.numBlocks > 0
      ? { kv_num_blocks: config.numBlocks }
      : config.kvCacheMemoryFraction > 0
        ? { kv_cache_memory_fraction: config.kvCacheMemoryFraction }
        : { kv_cache_bytes: config.kvCacheBytes };
  return { ...model, weights: config.weights, execution_provider: config.executionProvider, ...kv };
}

/** MODEL_DIR, else MODEL_ID's hub-cache snapshot (fetched when incomplete), else the tiny checkpoint. */
async function resolveModelDir(config: GpuServiceConfig, progress: ProgressReporter): Promise<string> {
  if (config.modelDir) return config.modelDir;
  if (config.modelId) {
    return ensureHubSnapshot({
      repo: config.modelId,
      revision: config.modelRevision,
      cacheDir: config.hfHubCache,
      offline: config.hfHubOffline,
      ...(config.hfEndpoint ? { endpoint: config.hfEndpoint } : {}),
      ...(config.hfToken ? { token: config.hfToken } : {}),
      onProgress: (p) => {
        const u = fromHubProgress(p);
        if (u) progress.update(u);
      },
    });
  }
  return ensureTinyCheckpoint(...(config.cacheDir ? [config.cacheDir] : []));
}

main().catch((err: unknown) => {
  console.error(JSON.stringify({ level: 60, service: "gpu-service", msg: "start failed", err: String(err) }));
  process.exit(1);
});
