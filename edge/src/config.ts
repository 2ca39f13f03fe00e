/**
 * Edge configuration: every setting, its environment variable and its default, parsed once at start-up.
 * No other file reads `process.env`.
 */
import { parseTarget } from "./backends/discovery";

/** The edge's settings. */
export interface EdgeConfig {
  /** `HOST` (default "0.0.0.0"): interface the HTTP server binds. */
  host: string;
  /** `PORT` (default 8080): HTTP port. */
  port: number;
  /** `PREPROCESS_URL` (default "127.0.0.1:50061"): host:port of the preprocess gRPC service. */
  preprocessUrl: string;
  /**
   * `GPU_SERVICE_URLS` (default "127.0.0.1:50062"): comma-separated host:port list of gpu-service replicas
   * (IPv6 as [addr]:port). An entry whose host is a name rather than an IP (a Kubernetes headless Service) is
   * looked up every GPU_POLL_INTERVAL_MS and each of its addresses becomes a replica (backends/discovery.ts).
   */
  gpuServiceUrls: string[];
  /**
   * `GPU_METRICS_URLS` (default empty = none): comma-separated `/metrics` URLs of the gpu-service replicas
   * (e.g. `http://127.0.0.1:9462/metrics`). Their `vllm:*` and `minicpmv_*` series are appended to the edge's
   * `/metrics` with a `replica` label, so one scrape of the edge answers like `vllm serve`'s `/metrics`.
   * `npm start` and the compose file set it; the Helm chart leaves it empty (each pod is scraped directly).
   */
  gpuMetricsUrls: string[];
  /** `API_KEYS` (default empty = open API): comma-separated accepted bearer keys. */
  apiKeys: string[];
  /** `RATE_LIMIT_RPM` (default 0 = off): requests per minute per API key (or per client when the API is open). */
  rateLimitRpm: number;
  /** `RATE_LIMIT_TPM` (default 0 = off): prompt + completion tokens per minute per API key. */
  rateLimitTpm: number;
  /**
   * `MAX_CONCURRENT_REQUESTS` (default 256): sequences being generated at once over all requests (a request
   * counts prompts x n, or its beam width); a request that would pass it is answered 429 (a lone request is
   * always admitted, MAX_SEQUENCES_PER_REQUEST bounds it).
   */
  maxConcurrentRequests: number;
  /**
   * `MAX_SEQUENCES_PER_REQUEST` (default 32): most sequences one request may ask for (completions: prompts x n;
   * chat: n, or the beam width); more is a 400 naming `n` (or `prompt`). Each sequence also counts as one
   * request against RATE_LIMIT_RPM.
   */
  maxSequencesPerRequest: number;
  /** `GPU_EJECT_AFTER_FAILURES` (default 3): consecutive transport failures (polls, calls) that eject a replica. */
  gpuEjectAfterFailures: number;
  /** `CORS_ORIGINS` (default empty = no CORS headers): comma-separated allowed origins, or "*". */
  corsOrigins: string[];
  /** `MAX_BODY_BYTES` (default 67108864 = 64 MiB): largest request body; base64 media counts. */
  maxBodyBytes: number;
  /** `MAX_IMAGES_PER_REQUEST` (default 16): image parts over all messages of one request. */
  maxImagesPerRequest: number;
  /** `MAX_VIDEOS_PER_REQUEST` (default 2): video parts over all messages of one request. */
  maxVideosPerRequest: number;
  /** `MAX_N` (default 8): largest `n` (and beam width) accepted. */
  maxN: number;
  /** `REQUEST_TIMEOUT_MS` (default 600000): deadline of the backend calls of one request; past it, 504. */
  requestTimeoutMs: number;
  /** `GPU_POLL_INTERVAL_MS` (default 1000): how often each gpu-service's Info and health are polled. */
  gpuPollIntervalMs: number;
  /** `SERVED_MODEL_NAME` (default empty = the name the gpu-service reports): the model id clients use. */
  servedModelName: string;
  /** `GRPC_MAX_MESSAGE_BYTES` (default 268435456 = 256 MiB): largest gRPC message sent or received. */
  grpcMaxMessageBytes: number;
  /**
   * `SHUTDOWN_GRACE_MS` (default 10000): on SIGTERM the edge stops accepting connections at once, in-flight
   * requests may finish for this long, and the rest end with an error event (503) and `[DONE]`.
   */
  shutdownGraceMs: number;
  /**
   * `STREAM_STALL_TIMEOUT_MS` (default 300000; 0 = off): a stream that sends nothing for this long is ended
   * with an error event (504) and `[DONE]`, and its generation cancelled.
   */
  streamStallTimeoutMs: number;
  /**
   * `HTTP_KEEP_ALIVE_TIMEOUT_MS` (default 65000): how long an idle client connection is kept open; longer than
   * clients and load balancers keep theirs, so the client always closes first.
   */
  keepAliveTimeoutMs: number;
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

function list(env: NodeJS.ProcessEnv, name: string, def: string): string[] {
  return (env[name] ?? def)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** Parses the edge's settings from `env` (normally `process.env`); throws naming the bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): EdgeConfig {
  const gpuServiceUrls = list(env, "GPU_SERVICE_URLS", "127.0.0.1:50062");
  if (gpuServiceUrls.length === 0) throw new Error("GPU_SERVICE_URLS must name at least one host:port");
  for (const u of gpuServiceUrls) parseTarget(u);
  return {
    host: env.HOST ?? "0.0.0.0",
    port: int(env, "PORT", 8080, 0),
    preprocessUrl: env.PREPROCESS_URL ?? "127.0.0.1:50061",
    gpuServiceUrls,
    gpuMetricsUrls: list(env, "GPU_METRICS_URLS", "").map((u) => {
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        throw new Error(`GPU_METRICS_URLS entries must be http(s) URLs, got "${u}"`);
      }
      if (url.protocol !== "http:" && url.protocol !== "https:")
        throw new Error(`GPU_METRICS_URLS entries must be http(s) URLs, got "${u}"`);
      return url.href;
    }),
    apiKeys: list(env, "API_KEYS", ""),
    rateLimitRpm: int(env, "RATE_LIMIT_RPM", 0, 0),
    rateLimitTpm: int(env, "RATE_LIMIT_TPM", 0, 0),
    maxConcurrentRequests: int(env, "MAX_CONCURRENT_REQUESTS", 256, 1),
    maxSequencesPerRequest: int(env, "MAX_SEQUENCES_PER_REQUEST", 32, 1),
    gpuEjectAfterFailures: int(env, "GPU_EJECT_AFTER_FAILURES", 3, 1),
    corsOrigins: list(env, "CORS_ORIGINS", ""),
    maxBodyBytes: int(env, "MAX_BODY_BYTES", 64 * 1024 * 1024, 1024),
    maxImagesPerRequest: int(env, "MAX_IMAGES_PER_REQUEST", 16, 0),
    maxVideosPerRequest: int(env, "MAX_VIDEOS_PER_REQUEST", 2, 0),
    maxN: int(env, "MAX_N", 8, 1),
    requestTimeoutMs: int(env, "REQUEST_TIMEOUT_MS", 600_000, 1),
    gpuPollIntervalMs: int(env, "GPU_POLL_INTERVAL_MS", 1000, 10),
    servedModelName: env.SERVED_MODEL_NAME ?? "",
    grpcMaxMessageBytes: int(env, "GRPC_MAX_MESSAGE_BYTES", 256 * 1024 * 1024, 4 * 1024 * 1024),
    shutdownGraceMs: int(env, "SHUTDOWN_GRACE_MS", 10_000, 0),
    streamStallTimeoutMs: int(env, "STREAM_STALL_TIMEOUT_MS", 300_000, 0),
    keepAliveTimeoutMs: int(env, "HTTP_KEEP_ALIVE_TIMEOUT_MS", 65_000, 1000),
    logLevel: env.LOG_LEVEL ?? "info",
  };
}
