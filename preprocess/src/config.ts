/**
 * All configuration of the preprocess service, parsed once from the environment. Each field names
 * its environment variable and default; nothing else reads `process.env`.
 */

import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";

/** Parsed configuration. */
export interface PreprocessConfig {
  /** PREPROCESS_HOST: gRPC bind address. Default 127.0.0.1. */
  readonly host: string;
  /** PREPROCESS_PORT: gRPC port. Default 50061. */
  readonly port: number;
  /** PREPROCESS_METRICS_PORT: Prometheus `/metrics` port (0 picks a free one). Default 9461. */
  readonly metricsPort: number;
  /**
   * PREPROCESS_METRICS_HOST: interface the metrics server binds. Default 127.0.0.1 (the container image and
   * the Helm chart set 0.0.0.0 for the cluster's scraper).
   */
  readonly metricsHost: string;
  /** MODEL_DIR: checkpoint directory (tokenizer and preprocessor configs). Default <repo>/.cache/checkpoints/tiny-a. */
  readonly modelDir: string;
  /** PREPROCESS_WORKERS: media worker threads (0 = inline). Default min(4, available cores), at least 1. */
  readonly workers: number;
  /** MEDIA_QUEUE_MAX: media tasks (images, video frames) waiting for a worker; more are refused (429). Default 1024. */
  readonly mediaQueueMax: number;
  /** MAX_CONCURRENT_VIDEOS: videos decoded at once (ffmpeg runs). Default 2. */
  readonly maxConcurrentVideos: number;
  /** MAX_QUEUED_VIDEOS: videos waiting for a decode slot; more are refused (429). Default 16. */
  readonly maxQueuedVideos: number;
  /** MAX_MESSAGE_BYTES: largest gRPC message in either direction. Default 256 MiB. */
  readonly maxMessageBytes: number;
  /** MAX_IMAGE_BYTES: largest encoded image. Default 20 MiB. */
  readonly maxImageBytes: number;
  /** MAX_IMAGE_PIXELS: largest decoded image (width*height), checked from the header. Default 40,000,000. */
  readonly maxImagePixels: number;
  /** MAX_IMAGE_DIMENSION: largest width or height. Default 16384. */
  readonly maxImageDimension: number;
  /** MAX_IMAGES_PER_REQUEST: still images per request. Default 16. */
  readonly maxImagesPerRequest: number;
  /** MAX_VIDEOS_PER_REQUEST: videos per request. Default 2. */
  readonly maxVideosPerRequest: number;
  /** MAX_SLICE_NUMS_LIMIT: largest max_slice_nums a request may ask for. Default 16. */
  readonly maxSliceNumsLimit: number;
  /** MAX_VIDEO_BYTES: largest encoded video (or sum of pre-sampled frames). Default 200 MiB. */
  readonly maxVideoBytes: number;
  /** MAX_VIDEO_DURATION_S: longest video in seconds. Default 600. */
  readonly maxVideoDurationSec: number;
  /** MAX_VIDEO_FRAMES: most frames sampled per video (and largest video_max_frames). Default 64. */
  readonly maxVideoFrames: number;
  /**
   * MAX_VIDEO_FRAME_PIXELS: largest video frame (width*height), checked from the stream header before any
   * frame is decoded; separate from MAX_IMAGE_PIXELS since every sampled frame is decoded. Default 8,294,400
   * (3840x2160).
   */
  readonly maxVideoFramePixels: number;
  /** MAX_VIDEO_FPS: largest video_fps a request may ask for. Default 4. */
  readonly maxVideoFps: number;
  /** VIDEO_TIMEOUT_MS: ffmpeg is killed after this long (per pass). Default 60000. */
  readonly videoTimeoutMs: number;
  /** MAX_PROMPT_TOKENS: prompt token limit (0 = the model's max_position_embeddings; never above it). Default 0. */
  readonly maxPromptTokens: number;
  /**
   * MAX_PROMPT_CHARS: most characters of text per request, refused before tokenizing (0 = 10 x the prompt-token
   * limit, e.g. 327,670 for a 32k context). Default 0.
   */
  readonly maxPromptChars: number;
  /**
   * FFMPEG_PATH: ffmpeg binary; else `ffmpeg` on PATH (the system's, e.g. Debian's in the container image),
   * else ffmpeg-static, else @ffmpeg-installer/ffmpeg (old static builds: the fallback for a bare machine).
   * Default unset. The binary and its version are logged at start.
   */
  readonly ffmpegPath: string | undefined;
  /** PATH: where the system ffmpeg is looked for. */
  readonly searchPath: string | undefined;
  /** MEDIA_URL_ALLOW: comma-separated CIDRs, addresses or host names that URLs may reach although private. Default empty. */
  readonly mediaUrlAllow: readonly string[];
  /** MEDIA_FETCH_TIMEOUT_MS: timeout of one URL fetch. Default 15000. */
  readonly mediaFetchTimeoutMs: number;
  /** SHUTDOWN_GRACE_MS: on SIGTERM, in-flight calls get this long before they are cancelled. Default 10000. */
  readonly shutdownGraceMs: number;
  /** LOG_LEVEL: pino level. Default info. */
  readonly logLevel: string;
}

const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MiB = 1024 * 1024;

function intVar(env: Record<string, string | undefined>, name: string, def: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return def;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min)
    throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return v;
}

function numVar(env: Record<string, string | undefined>, name: string, def: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return def;
  const v = Number(raw);
  if (!(v > 0) || !Number.isFinite(v)) throw new Error(`${name} must be a positive number, got ${JSON.stringify(raw)}`);
  return v;
}

/** Parses the configuration from `env` (default: the process environment). */
export function parseConfig(env: Record<string, string | undefined> = process.env): PreprocessConfig {
  return {
    host: env.PREPROCESS_HOST || "127.0.0.1",
    port: intVar(env, "PREPROCESS_PORT", 50061, 0),
    metricsPort: intVar(env, "PREPROCESS_METRICS_PORT", 9461, 0),
    metricsHost: env.PREPROCESS_METRICS_HOST || "127.0.0.1",
    modelDir: env.MODEL_DIR || `${REPO_ROOT}.cache/checkpoints/tiny-a`,
    workers: intVar(env, "PREPROCESS_WORKERS", Math.max(1, Math.min(4, availableParallelism())), 0),
    mediaQueueMax: intVar(env, "MEDIA_QUEUE_MAX", 1024, 1),
    maxConcurrentVideos: intVar(env, "MAX_CONCURRENT_VIDEOS", 2, 1),
    maxQueuedVideos: intVar(env, "MAX_QUEUED_VIDEOS", 16, 0),
    maxMessageBytes: intVar(env, "MAX_MESSAGE_BYTES", 256 * MiB, 4 * MiB),
    maxImageBytes: intVar(env, "MAX_IMAGE_BYTES", 20 * MiB, 1),
    maxImagePixels: intVar(env, "MAX_IMAGE_PIXELS", 40_000_000, 1),
    maxImageDimension: intVar(env, "MAX_IMAGE_DIMENSION", 16384, 1),
    maxImagesPerRequest: intVar(env, "MAX_IMAGES_PER_REQUEST", 16, 0),
    maxVideosPerRequest: intVar(env, "MAX_VIDEOS_PER_REQUEST", 2, 0),
    maxSliceNumsLimit: intVar(env, "MAX_SLICE_NUMS_LIMIT", 16, 1),
    maxVideoBytes: intVar(env, "MAX_VIDEO_BYTES", 200 * MiB, 1),
    maxVideoDurationSec: numVar(env, "MAX_VIDEO_DURATION_S", 600),
    maxVideoFrames: intVar(env, "MAX_VIDEO_FRAMES", 64, 1),
    maxVideoFps: numVar(env, "MAX_VIDEO_FPS", 4),
    maxVideoFramePixels: intVar(env, "MAX_VIDEO_FRAME_PIXELS", 3840 * 2160, 1),
    videoTimeoutMs: intVar(env, "VIDEO_TIMEOUT_MS", 60_000, 1),
    maxPromptTokens: intVar(env, "MAX_PROMPT_TOKENS", 0, 0),
    maxPromptChars: intVar(env, "MAX_PROMPT_CHARS", 0, 0),
    ffmpegPath: env.FFMPEG_PATH || undefined,
    searchPath: env.PATH,
    mediaUrlAllow: (env.MEDIA_URL_ALLOW ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    mediaFetchTimeoutMs: intVar(env, "MEDIA_FETCH_TIMEOUT_MS", 15_000, 1),
    shutdownGraceMs: intVar(env, "SHUTDOWN_GRACE_MS", 10_000, 0),
    logLevel: env.LOG_LEVEL || "info",
  };
}
