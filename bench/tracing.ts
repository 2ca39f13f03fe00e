/**
 * Tracing overhead benchmark (not a test): decode throughput on tiny-a with tracing off vs on.
 *
 *   npx tsx bench/tracing.ts [--engine worker|local] [--concurrency 16] [--tokens 64] [--rounds 5] [--threads 0]
 *
 * "on" is the production path with traces exported: each request carries its trace link, the engine reports
 * every step, and the stage spans plus one linked `engine.step` span per step are made on the main thread and
 * exported by the OpenTelemetry SDK (batch processor, OTLP/HTTP JSON) to a receiver in this process that
 * discards them. "off" is the production path with tracing off: no link, no step hook, no tracer call.
 *
 *  - `--engine worker` (default, as the gpu-service runs): the engine in a worker thread; two engines (one
 *    started with traceSteps) so each mode runs exactly as configured in production.
 *  - `--engine local`: the engine on the main thread with the spans (the worst case: span work competes
 *    with the engine loop directly).
 *
 * Rounds alternate off/on to cancel drift; each round sends `concurrency` requests together. Prints per mode
 * the median decode tokens/s (from the moment every request has its first token to the last token) and
 * process CPU ms per token, and, for "on", `tracing_work_pct`: the share of the round's wall time spent in
 * tracing work itself (span creation, the step hook, and the export, flushed and timed after the round).
 * NOTE: on a shared machine the off/on throughput difference is dominated by noise (other jobs); the
 * attributed share is the robust figure. It leaves out GC of span objects and the worker's step batching
 * (one postMessage per 100 ms).
 */

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { loadTokenizer } from "@minicpmv/preprocess/tokenizer";
import { startTelemetry } from "@minicpmv/proto/telemetry";
import { context, trace } from "@opentelemetry/api";
import { ensureTinyCheckpoint } from "../gpu-service/src/checkpoint";
import { type EngineHandle, LocalEngine } from "../gpu-service/src/engine/engine-handle";
import { greedyParams } from "../gpu-service/src/engine/sampler";
import type { EngineRequest, SamplingParams } from "../gpu-service/src/engine/types";
import { createModelRunner } from "../gpu-service/src/model";
import { recordRequestSpans, recordStep, traceLinkOf } from "../gpu-service/src/tracing";
import { WorkerEngine } from "../gpu-service/src/worker";
import { lcg, randomTextPrompt } from "./common";

const { values: args } = parseArgs({
  options: {
    engine: { type: "string", default: "worker" },
    concurrency: { type: "string", default: "16" },
    tokens: { type: "string", default: "64" },
    rounds: { type: "string", default: "5" },
    threads: { type: "string", default: "0" },
  },
});
const mode = args.engine as string;
if (mode !== "worker" && mode !== "local") throw new Error(`--engine: worker or local, got ${mode}`);
const concurrency = Number(args.concurrency);
const tokens = Number(args.tokens);
const rounds = Number(args.rounds);
const threads = Number(args.threads);

/** Discards OTLP exports, counting spans' bytes (the collector's side is not what we measure). */
async function startSink(): Promise<{ endpoint: string; bytes: () => number; close: () => void }> {
  let bytes = 0;
  const server = createServer((req, res) => {
    req.on("data", (c: Buffer) => {
      bytes += c.length;
    });
    req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end("{}"));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bytes: () => bytes,
    close: () => server.close(),
  };
}

const GREEDY: SamplingParams = greedyParams(tokens, { ignoreEos: true });
let ids = 0;
const rand = lcg();

async function main() {
  const sink = await startSink();
  // The standard variables, as an operator would set them; the SDK reads them from the environment.
  process.env.OTEL_TRACES_EXPORTER = "otlp";
  process.env.OTEL_EXPORTER_OTLP_PROTOCOL = "http/json";
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = sink.endpoint;
  process.env.OTEL_METRICS_EXPORTER = "none";
  process.env.OTEL_LOGS_EXPORTER = "none";
  // Export only when flushed after each round, so that export work is timed and attributed (below).
  process.env.OTEL_BSP_SCHEDULE_DELAY = "3600000";
  process.env.OTEL_BSP_MAX_QUEUE_SIZE = "1000000";
  process.env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE = "1000000";
  const telemetry = startTelemetry({ serviceName: "bench-tracing" });
  if (!telemetry.tracing) throw new Error("tracing did not start");
  const tracer = telemetry.tracer;
  const provider = (
    trace.getTracerProvider() as unknown as { getDelegate(): { forceFlush(): Promise<void> } }
  ).getDelegate();
  /** Milliseconds spent in tracing work (span creation, the step hook, export) in the current round. */
  let tracingMs = 0;
  const timed = <T>(fn: () => T): T => {
    const t = performance.now();
    try {
      return fn();
    } finally {
      tracingMs += performance.now() - t;
    }
  };

  const dir = await ensureTinyCheckpoint();
  const modelOpts = {
    modelDir: dir,
    blockSize: 16,
    kvCacheBytes: 256 * 1024 ** 2,
    weights: "f32" as const,
    ...(threads > 0 ? { intraOpThreads: threads } : {}),
  };
  const engineOpts = {
    maxBatchTokens: 4096,
    maxRunning: 64,
    maxWaiting: 256,
    encoderCacheBytes: 64 * 1024 ** 2,
    enablePrefixCaching: false,
  };
  let off: EngineHandle;
  let on: EngineHandle;
  if (mode === "worker") {
    off = await WorkerEngine.start({ model: modelOpts, engine: engineOpts });
    on = await WorkerEngine.start({ model: modelOpts, engine: engineOpts, traceSteps: true });
  } else {
    const tok = await loadTokenizer(dir);
    off = new LocalEngine(await createModelRunner(modelOpts), tok, engineOpts);
    on = off;
  }

  /**
   * One round: decode tokens/s (wall), process CPU ms per generated token, and the share of the round's
   * wall time spent in tracing work (0 when off).
   */
  async function round(traced: boolean): Promise<{ tps: number; cpuMsPerTok: number; attributed: number }> {
    const engine = traced ? on : off;
    engine.onStep = traced ? (rec) => timed(() => recordStep(tracer, rec)) : undefined;
    tracingMs = 0;
    const t0 = performance.now();
    const firsts: number[] = [];
    let generated = 0;
    let all = 0;
    const cpu0 = process.cpuUsage();
    let end = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        const tokenIds = randomTextPrompt(32, rand);
        const req: EngineRequest = {
          id: `t${ids++}`,
          prompt: {
            tokenIds,
            media: [],
            counts: { text: tokenIds.length, image: 0, video: 0, total: tokenIds.length },
          },
          params: GREEDY,
          priority: 0,
        };
        // As the service does: the request's span (here a stand-in for the Generate server span).
        const span = traced
          ? timed(() => tracer.startSpan("Generate", { attributes: { "request.id": req.id } }))
          : undefined;
        const ctx = span ? trace.setSpan(context.active(), span) : undefined;
        if (ctx) req.trace = timed(() => traceLinkOf(ctx));
        let first = true;
        for await (const ev of engine.generate(req)) {
          if (ev.type === "token") {
            all += ev.tokenIds.length;
            const now = performance.now();
            if (first) firsts.push(now);
            else generated += ev.tokenIds.length;
            first = false;
            end = Math.max(end, now);
          } else if (ev.type === "final" && ctx && ev.timeline) {
            timed(() =>
              recordRequestSpans(tracer, ctx, ev.timeline as NonNullable<typeof ev.timeline>, ev.usage, {
                "request.id": req.id,
                "gen_ai.request.model": "tiny-a",
              }),
            );
          } else if (ev.type === "error") throw new Error(ev.message);
        }
        if (span) timed(() => span.end());
      }),
    );
    const cpu = process.cpuUsage(cpu0);
    const wallMs = performance.now() - t0;
    if (traced) {
      // The export of this round's spans (serialise + POST), as the batch processor would do in the background.
      const t = performance.now();
      await provider.forceFlush();
      tracingMs += performance.now() - t;
    }
    return {
      tps: generated / ((end - Math.max(...firsts)) / 1000),
      // NOTE: with the worker engine this includes the worker's CPU (process-wide), prefill included.
      cpuMsPerTok: (cpu.user + cpu.system) / 1000 / all,
      attributed: tracingMs / wallMs,
    };
  }

  await round(false); // warm-up (ONNX Runtime first runs, JIT)
  await round(true);
  const results = {
    off: [] as number[],
    on: [] as number[],
    cpuOff: [] as number[],
    cpuOn: [] as number[],
    attributed: [] as number[],
  };
  for (let i = 0; i < rounds; i++) {
    // Alternate which mode goes first so neither always follows the other.
    const order = i % 2 === 0 ? [false, true] : [true, false];
    for (const traced of order) {
      const r = await round(traced);
      (traced ? results.on : results.off).push(r.tps);
      (traced ? results.cpuOn : results.cpuOff).push(r.cpuMsPerTok);
      if (traced) results.attributed.push(r.attributed);
      console.log(
        JSON.stringify({
          round: i,
          tracing: traced,
          decode_tok_s: +r.tps.toFixed(1),
          cpu_ms_per_token: +r.cpuMsPerTok.toFixed(3),
          ...(traced ? { tracing_work_pct: +(r.attributed * 100).toFixed(3) } : {}),
        }),
      );
    }
  }
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
  };
  const offTps = median(results.off);
  const onTps = median(results.on);
  const cpuOff = median(results.cpuOff);
  const cpuOn = median(results.cpuOn);
  await telemetry.shutdown();
  console.log(
    JSON.stringify({
      engine: mode,
      concurrency,
      tokens,
      rounds,
      decode_tok_s_off: +offTps.toFixed(1),
      decode_tok_s_on: +onTps.toFixed(1),
      overhead_pct: +(((offTps - onTps) / offTps) * 100).toFixed(2),
      cpu_ms_per_token_off: +cpuOff.toFixed(3),
      cpu_ms_per_token_on: +cpuOn.toFixed(3),
      cpu_overhead_pct: +(((cpuOn - cpuOff) / cpuOff) * 100).toFixed(2),
      tracing_work_pct: +(median(results.attributed) * 100).toFixed(3),
      exported_kib: Math.round(sink.bytes() / 1024),
    }),
  );
  await off.close();
  if (on !== off) await on.close();
  sink.close();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
