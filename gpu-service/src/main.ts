/**
 * Starts the gpu-service: the gRPC server first (health NOT_SERVING while the model loads), then the
 * engine worker (model + engine loop), then metrics; logs `{"msg":"ready"}` once serving.
 *
 * SIGTERM/SIGINT: health goes NOT_SERVING, the server stops accepting calls, in-flight requests may finish
 * for SHUTDOWN_GRACE_MS, the rest are cancelled (their KV blocks freed), the worker is closed, exit 0.
 * An engine-fatal error (broken invariant, failed model step) logs it, goes NOT_SERVING and exits 1.
 */

import { startTelemetry, traceLogFields } from "@minicpmv/proto/telemetry";
import pino from "pino";
import { ensureTinyCheckpoint } from "./checkpoint";
import { loadConfig } from "./config";
import { GpuMetrics } from "./metrics";
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
  logger.info({ port: grpcServer.port }, "grpc listening; loading the model");

  const modelDir = config.modelDir || (await ensureTinyCheckpoint(...(config.cacheDir ? [config.cacheDir] : [])));
  const engine = await WorkerEngine.start({
    model: {
      modelDir,
      ...(config.cacheDir ? { cacheDir: config.cacheDir } : {}),
      blockSize: config.blockSize,
      ...(config.numBlocks > 0 ? { numBlocks: config.numBlocks } : { kvCacheBytes: config.kvCacheBytes }),
      weights: config.weights,
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
  });
  const info = { ...engine.info, modelName: config.modelName || engine.info.modelName };
  const metrics = new GpuMetrics(info.modelName, { source: telemetry });
  metrics.watch(() => engine.stats());
  grpcServer.attach(engine, {
    metrics,
    modelName: info.modelName,
    tracer: telemetry.tracing ? telemetry.tracer : undefined,
  });
  const m = await telemetry.serveMetrics(config.metricsPort, config.metricsHost);
  grpcServer.setServing(true);
  logger.info(
    {
      grpc_port: grpcServer.port,
      metrics_port: m.port,
      model: info.modelName,
      model_dir: modelDir,
      kv_blocks: info.numBlocks,
      block_size: info.blockSize,
      kv_bytes_per_token: info.kvBytesPerToken,
      context_length: info.contextLength,
      tracing: telemetry.tracing,
    },
    "ready",
  );

  let stopping = false;
  const stop = async (reason: string, code: number) => {
    if (stopping) return;
    stopping = true;
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

main().catch((err: unknown) => {
  console.error(JSON.stringify({ level: 60, service: "gpu-service", msg: "start failed", err: String(err) }));
  process.exit(1);
});
