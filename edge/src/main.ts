/**
 * Starts the edge: gRPC clients for preprocess and every gpu-service replica, the polling GpuPool, and the
 * Hono app on @hono/node-server. On SIGTERM/SIGINT it stops accepting connections, lets in-flight requests
 * finish for SHUTDOWN_GRACE_MS, cancels the rest (which cancels their gRPC calls), and exits 0.
 */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { startTelemetry, traceLogFields } from "@minicpmv/proto/telemetry";
import pino from "pino";
import { createApp } from "./app";
import { GpuDiscovery } from "./backends/discovery";
import { GrpcGenerationBackend } from "./backends/generation-client";
import { GpuPool } from "./backends/gpu-pool";
import { GrpcPreprocessBackend } from "./backends/preprocess-client";
import { loadConfig } from "./config";
import { EdgeMetrics } from "./metrics";

async function main(): Promise<void> {
  const config = loadConfig();
  const telemetry = startTelemetry({ serviceName: "edge" });
  const logger = pino({ level: config.logLevel, base: { service: "edge" }, mixin: traceLogFields });
  const preprocess = new GrpcPreprocessBackend(config.preprocessUrl, config.grpcMaxMessageBytes);
  // Replicas: IP entries as given; hostnames (a Kubernetes headless Service) re-resolved every poll interval.
  const pool = new GpuPool([], {}, { ejectAfterFailures: config.gpuEjectAfterFailures });
  const discovery = new GpuDiscovery(
    pool,
    config.gpuServiceUrls,
    (address) => new GrpcGenerationBackend(address, config.grpcMaxMessageBytes),
  );
  discovery.events = {
    onChange: (added, removed) => logger.info({ added, removed }, "gpu-service replicas changed"),
    onError: (entry, err) =>
      logger.warn(
        { entry, err: err.message },
        "gpu-service lookup failed; keeping the last addresses (logged again only after it recovers)",
      ),
  };
  await discovery.refresh();
  const shutdown = new AbortController();
  const app = createApp({
    config,
    preprocess,
    pool,
    metrics: new EdgeMetrics({ source: telemetry, processMetrics: true }),
    tracer: telemetry.tracing ? telemetry.tracer : undefined,
    logger,
    shutdownSignal: shutdown.signal,
  });
  pool.start(config.gpuPollIntervalMs);
  discovery.start(config.gpuPollIntervalMs);
  if (config.apiKeys.length === 0) {
    logger.warn("API_KEYS is not set: the API is open to anyone who can reach it (as vLLM without --api-key)");
  }

  // NOTE: without TLS/HTTP2 options @hono/node-server creates a plain node:http Server.
  const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port }) as Server;
  // NOTE: an idle keep-alive connection must be closed by the client, never by the server: when both time
  // out near the same moment, a request the client sends on the socket the server is closing fails with
  // "other side closed". So the server waits longer than clients and load balancers keep idle sockets
  // (undici 4 s, nginx and cloud load balancers 60 s).
  server.keepAliveTimeout = config.keepAliveTimeoutMs;
  server.headersTimeout = config.keepAliveTimeoutMs + 1000;
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  logger.info(
    {
      host: config.host,
      port,
      preprocess: config.preprocessUrl,
      gpu_services: config.gpuServiceUrls,
      auth: config.apiKeys.length > 0 ? `${config.apiKeys.length} key(s)` : "open",
      tracing: telemetry.tracing,
    },
    "ready",
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, grace_ms: config.shutdownGraceMs }, "shutting down: no new connections, draining streams");
    // 1. Stop accepting: the listening socket closes; idle keep-alive connections close as they fall idle.
    const idle = setInterval(() => server.closeIdleConnections(), 100);
    idle.unref();
    let forced: NodeJS.Timeout | undefined;
    // 2. In-flight streams get the grace period; then the rest are cancelled: each ends with an error event
    //    and [DONE] (routes/generation.ts), and the connections are closed once those are written.
    const grace = setTimeout(() => {
      logger.warn("grace period over: ending in-flight requests with an error event");
      shutdown.abort();
      forced = setTimeout(() => server.closeAllConnections(), 2000);
    }, config.shutdownGraceMs);
    server.close(() => {
      clearTimeout(grace);
      clearTimeout(forced);
      clearInterval(idle);
      pool.stop();
      preprocess.close();
      discovery.close();
      logger.info("stopped");
      logger.flush();
      // Flush the last spans before exiting (bounded: a dead collector must not block shutdown).
      void Promise.race([telemetry.shutdown(), new Promise((r) => setTimeout(r, 2000))]).then(() => process.exit(0));
    });
    server.closeIdleConnections();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => stop("SIGHUP"));
}

main().catch((err: unknown) => {
  console.error(JSON.stringify({ level: 60, service: "edge", msg: "start failed", err: String(err) }));
  process.exit(1);
});
