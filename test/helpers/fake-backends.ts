/**
 * Fake preprocess and gpu-service gRPC servers for edge tests (real grpc-js on loopback, the edge's real gRPC
 * clients, fake model behind them: see edge/src/testing/fakes.ts). Import it to run them in-process, or run
 * it as a process (`FAKE_ROLE=gpu|preprocess FAKE_PORT=n node --import tsx test/helpers/fake-backends.ts`)
 * to have one to kill; it prints `{"msg":"ready","port":n}` when serving.
 *
 * Request ids steer the fake gpu-service (unless FAKE_IGNORE_STEERING=1): "hold-*" waits before its first
 * token until cancelled, "hang-*" waits after its first token until cancelled. FAKE_QUEUE_DEPTH sets the
 * queue depth its Info reports.
 */
import { create } from "@bufbuild/protobuf";
import {
  FinishReason,
  type GenerateResponse,
  GenerateResponseSchema,
  GenerationService,
  Modality,
  PreparedPromptSchema,
  PreprocessService,
  Role,
} from "@minicpmv/proto";
import { addService, createServer, GrpcError, grpc, listen } from "@minicpmv/proto/grpc";
import { HealthService, ServingStatus } from "@minicpmv/proto/health";
import { promptFromPb } from "../../edge/src/backends/preprocess-client";
import type { ChatMessage, ContentPart, GenerateEvent } from "../../edge/src/backends/types";
import { EdgeError } from "../../edge/src/errors";
import { FakeGpu, FakePreprocess } from "../../edge/src/testing/fakes";

const ROLES: Record<number, ChatMessage["role"]> = {
  [Role.SYSTEM]: "system",
  [Role.USER]: "user",
  [Role.ASSISTANT]: "assistant",
};

function grpcOf(err: unknown): GrpcError {
  if (err instanceof EdgeError) {
    const code =
      err.kind === "invalid_request" || err.kind === "context_too_long"
        ? grpc.status.INVALID_ARGUMENT
        : grpc.status.INTERNAL;
    return new GrpcError(code, err.message);
  }
  return new GrpcError(grpc.status.INTERNAL, String(err));
}

function toPb(ev: GenerateEvent): GenerateResponse {
  if (ev.type === "token") {
    return create(GenerateResponseSchema, {
      event: {
        case: "token",
        value: {
          index: ev.index,
          tokenIds: ev.tokenIds,
          text: ev.text,
          logprobs: ev.logprobs.map((l) => ({ chosen: l.chosen, top: l.top })),
        },
      },
    });
  }
  if (ev.type === "choice_end") {
    const reason = { stop: FinishReason.STOP, length: FinishReason.LENGTH, abort: FinishReason.ABORT }[ev.finishReason];
    return create(GenerateResponseSchema, {
      event: { case: "choiceEnd", value: { index: ev.index, finishReason: reason, stopReason: ev.stopReason } },
    });
  }
  return create(GenerateResponseSchema, {
    event: {
      case: "final",
      value: {
        usage: {
          promptTokens: ev.usage.promptTokens,
          promptTokensByModality: ev.usage.promptTokensByModality,
          cachedPromptTokens: ev.usage.cachedPromptTokens,
          completionTokens: ev.usage.completionTokens,
        },
        timings: ev.timings,
      },
    },
  });
}

/** A running fake server. */
export interface FakeServer {
  port: number;
  /** Request ids and x-request-id metadata seen, in order. */
  seen: { requestId: string; metadataId: string }[];
  /** Calls the server saw cancelled by the client. */
  cancelled: number;
  stop(): Promise<void>;
}

function wait(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** Starts a fake gpu-service on 127.0.0.1:`port` (0 = any). */
export async function startFakeGpu(
  port = 0,
  opts: { name?: string; queueDepth?: number; ignoreSteering?: boolean } = {},
): Promise<FakeServer> {
  const server = createServer();
  const health = new HealthService([GenerationService.typeName]);
  const gpu = new FakeGpu(opts.name ?? "fake-gpu");
  gpu.info_.queueDepth = opts.queueDepth ?? 0;
  const steer = !opts.ignoreSteering;
  const out: FakeServer = { port: 0, seen: [], cancelled: 0, stop: async () => server.forceShutdown() };
  addService(server, GenerationService, {
    async *generate(req, ctx) {
      out.seen.push({ requestId: req.requestId, metadataId: String(ctx.metadata.get("x-request-id")[0] ?? "") });
      const p = req.params;
      if (steer && req.requestId.startsWith("hold-")) {
        await wait(ctx.signal);
        out.cancelled++;
        return;
      }
      try {
        const events = gpu.generate(
          {
            requestId: req.requestId,
            priority: req.priority,
            prompt: promptFromPb(req.prompt),
            params: {
              minTokens: p?.minTokens ?? 0,
              stop: p?.stop ?? [],
              stopTokenIds: p?.stopTokenIds ?? [],
              ignoreEos: p?.ignoreEos ?? false,
              n: p?.n || 1,
              beamWidth: p?.beamWidth ?? 0,
              logprobs: p?.logprobs ?? false,
              topLogprobs: p?.topLogprobs ?? 0,
              ...(p?.maxTokens !== undefined ? { maxTokens: p.maxTokens } : {}),
              ...(p?.seed !== undefined ? { seed: Number(p.seed) } : {}),
            },
          },
          { signal: ctx.signal },
        );
        let first = true;
        for await (const ev of events) {
          yield toPb(ev);
          if (steer && first && req.requestId.startsWith("hang-")) {
            await wait(ctx.signal);
            out.cancelled++;
            return;
          }
          first = false;
        }
      } catch (err) {
        if (ctx.signal.aborted) {
          out.cancelled++;
          return;
        }
        throw grpcOf(err);
      }
    },
    async info() {
      const i = await gpu.info();
      return { ...i };
    },
  });
  health.register(server);
  out.port = await listen(server, "127.0.0.1", port);
  health.setAll(ServingStatus.SERVING);
  return out;
}

/** Starts a fake preprocess service on 127.0.0.1:`port` (0 = any). */
export async function startFakePreprocess(port = 0): Promise<FakeServer> {
  const server = createServer();
  const health = new HealthService([PreprocessService.typeName]);
  const pre = new FakePreprocess();
  const out: FakeServer = { port: 0, seen: [], cancelled: 0, stop: async () => server.forceShutdown() };
  addService(server, PreprocessService, {
    async prepare(req, ctx) {
      out.seen.push({ requestId: req.requestId, metadataId: String(ctx.metadata.get("x-request-id")[0] ?? "") });
      const messages: ChatMessage[] = req.messages.map((m) => ({
        role: ROLES[m.role] ?? "user",
        parts: m.parts.map((p): ContentPart => {
          const v = p.part;
          if (v.case === "text") return { kind: "text", text: v.value };
          if (v.case === "image") {
            const s = v.value.source;
            return {
              kind: "image",
              source:
                s.case === "url" ? { kind: "url", url: s.value } : { kind: "data", data: s.value ?? new Uint8Array() },
            };
          }
          if (v.case === "video") {
            const s = v.value.source;
            if (s.case === "frames") return { kind: "video", source: { kind: "frames", frames: s.value.frames } };
            return {
              kind: "video",
              source:
                s.case === "url" ? { kind: "url", url: s.value } : { kind: "data", data: s.value ?? new Uint8Array() },
            };
          }
          throw new GrpcError(grpc.status.INVALID_ARGUMENT, "messages: empty content part");
        }),
      }));
      const o = req.options;
      try {
        const prompt = await pre.prepare(
          {
            requestId: req.requestId,
            messages,
            addGenerationPrompt: req.addGenerationPrompt,
            options: {
              ...(o?.videoMaxFrames !== undefined ? { videoMaxFrames: o.videoMaxFrames } : {}),
              maxPromptTokens: o?.maxPromptTokens ?? 0,
            },
          },
          {},
        );
        return {
          prompt: create(PreparedPromptSchema, {
            tokenIds: prompt.tokenIds,
            promptText: prompt.promptText,
            tokenCounts: prompt.tokenCounts,
            media: prompt.media.map((m) => ({
              ...m,
              modality: m.modality === "video" ? Modality.VIDEO : Modality.IMAGE,
            })),
          }),
        };
      } catch (err) {
        throw grpcOf(err);
      }
    },
  });
  health.register(server);
  out.port = await listen(server, "127.0.0.1", port);
  health.setAll(ServingStatus.SERVING);
  return out;
}

if (process.env.FAKE_ROLE) {
  const port = Number(process.env.FAKE_PORT ?? 0);
  const s =
    process.env.FAKE_ROLE === "preprocess"
      ? await startFakePreprocess(port)
      : await startFakeGpu(port, {
          queueDepth: Number(process.env.FAKE_QUEUE_DEPTH ?? 0),
          ignoreSteering: process.env.FAKE_IGNORE_STEERING === "1",
        });
  console.log(JSON.stringify({ msg: "ready", port: s.port }));
  process.on("SIGTERM", () => void s.stop().then(() => process.exit(0)));
}
