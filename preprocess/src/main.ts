/**
 * The preprocess process: gRPC PreprocessService + grpc.health.v1 on PREPROCESS_HOST:PREPROCESS_PORT,
 * Prometheus metrics on PREPROCESS_METRICS_PORT. Logs `{"msg":"ready"}` when serving; SIGTERM/SIGINT
 * stop accepting calls, let in-flight ones finish (SHUTDOWN_GRACE_MS), stop the workers, exit 0.
 */

import { existsSync } from "node:fs";
import { join } from "node:path";
import { createServer, listen, shutdown } from "@minicpmv/proto/grpc";
import { HealthService, ServingStatus } from "@minicpmv/proto/health";
import { startTelemetry, traceLogFields } from "@minicpmv/proto/telemetry";
import pino from "pino";
import { parseConfig } from "./config";
import { createMediaFetcher } from "./fetch-media";
import { loadModelDefaults } from "./model-defaults";
import { createMediaRunner } from "./pool";
import { registerPreprocessService } from "./service";
import { type TokenizerSource, WorkerTextRunner } from "./text-runner";
import { buildTokenizerFiles, createTokenizer, loadTokenizer, type Tokenizer } from "./tokenizer";
import { ffmpegVersion, resolveFfmpegPath } from "./video/ffmpeg";
import { VideoSlots } from "./video/video-slots";

const config = parseConfig();
const log = pino({ level: config.logLevel, base: { service: "preprocess" }, mixin: traceLogFields });

function tokenizerSource(modelDir: string): TokenizerSource {
  return existsSync(join(modelDir, "tokenizer.json")) ? { modelDir } : { builtIn: true };
}

async function tokenizerFor(modelDir: string): Promise<Tokenizer> {
  if (existsSync(join(modelDir, "tokenizer.json"))) return await loadTokenizer(modelDir);
  // NOTE: the gpu-service may still be generating the checkpoint; the built-in files are the same
  // MiniCPM-V 2.6 tokenizer, so starting with them avoids a start-up race.
  log.warn({ modelDir }, "no tokenizer.json in MODEL_DIR; using the built-in MiniCPM-V 2.6 tokenizer");
  const files = buildTokenizerFiles();
  return createTokenizer(files.tokenizerJson, files.tokenizerConfig, "built-in");
}

async function main(): Promise<void> {
  const telemetry = startTelemetry({ serviceName: "preprocess" });
  // The tokenizer source is fixed before either copy loads, so both read the same files.
  const source = tokenizerSource(config.modelDir);
  const [tokenizer, defaults, text] = await Promise.all([
    tokenizerFor(config.modelDir),
    loadModelDefaults(config.modelDir),
    WorkerTextRunner.start(source),
  ]);
  if (defaults.missing.length)
    log.warn({ modelDir: config.modelDir, missing: defaults.missing }, "using reference defaults");
  let ffmpeg: string | undefined;
  const ffmpegPath = () => {
    ffmpeg ??= resolveFfmpegPath(config.ffmpegPath, undefined, config.searchPath);
    return ffmpeg;
  };
  try {
    const path = ffmpegPath();
    log.info({ ffmpeg: path, version: ffmpegVersion(path) }, "ffmpeg found");
  } catch (err) {
    log.warn({ err: (err as Error).message }, "video input disabled until ffmpeg is available");
  }
  const media = createMediaRunner(config.workers, config.mediaQueueMax);
  const deps = {
    tokenizer,
    text,
    media,
    videoSlots: new VideoSlots(config.maxConcurrentVideos, config.maxQueuedVideos),
    defaults,
    ffmpegPath,
    tracer: telemetry.tracing ? telemetry.tracer : undefined,
    fetchMedia: createMediaFetcher({
      allow: config.mediaUrlAllow,
      timeoutMs: config.mediaFetchTimeoutMs,
      maxBytes: Math.max(config.maxImageBytes, config.maxVideoBytes),
    }),
    limits: {
      image: {
        maxBytes: config.maxImageBytes,
        maxPixels: config.maxImagePixels,
        maxDimension: config.maxImageDimension,
      },
      maxImagesPerRequest: config.maxImagesPerRequest,
      maxVideosPerRequest: config.maxVideosPerRequest,
      maxSliceNumsLimit: config.maxSliceNumsLimit,
      maxVideoBytes: config.maxVideoBytes,
      maxVideoDurationSec: config.maxVideoDurationSec,
      maxVideoFrames: config.maxVideoFrames,
      maxVideoFps: config.maxVideoFps,
      maxVideoFramePixels: config.maxVideoFramePixels,
      videoTimeoutMs: config.videoTimeoutMs,
      maxPromptTokens: config.maxPromptTokens,
      maxPromptChars: config.maxPromptChars,
    },
  };

  const server = createServer({ maxMessageBytes: config.maxMessageBytes });
  const health = new HealthService(["minicpmv.v1.PreprocessService"]);
  health.register(server);
  registerPreprocessService(server, deps, log);
  const port = await listen(server, config.host, config.port);
  const metricsServer = await telemetry.serveMetrics(config.metricsPort, config.metricsHost);
  health.setAll(ServingStatus.SERVING);
  log.info(
    {
      host: config.host,
      port,
      metricsPort: metricsServer.port,
      workers: config.workers,
      modelDir: config.modelDir,
      tracing: telemetry.tracing,
    },
    "ready",
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    health.setAll(ServingStatus.NOT_SERVING);
    await shutdown(server, config.shutdownGraceMs);
    await Promise.allSettled([media.close(), text.close(), metricsServer.close(), telemetry.shutdown()]);
    log.info("stopped");
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
}

main().catch((err: unknown) => {
  log.fatal({ err: err instanceof Error ? err.message : String(err) }, "preprocess failed to start");
  process.exit(1);
});
