/**
 * `minicpmv.v1.PreprocessService` over gRPC: the only file that imports the contract. Converts proto
 * messages to domain types on entry and back on exit, and maps every error to a gRPC code in one place
 * (`toGrpcError`).
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type MediaItemSchema,
  type ChatMessage as PbChatMessage,
  type ContentPart as PbContentPart,
  Modality as PbModality,
  type PrepareRequest as PbPrepareRequest,
  Role as PbRole,
  type PrepareResponseSchema,
  PreprocessService,
} from "@minicpmv/proto";
import { addService, type CallContext, GrpcError, grpc } from "@minicpmv/proto/grpc";
import { type Counter, type Histogram, metrics } from "@opentelemetry/api";
import { invalid, PreprocessError } from "./errors";
import { type PrepareDeps, prepare } from "./prepare";
import type { ChatTurn, ContentPart, PreparedPrompt, PrepareRequest, Role } from "./types";

const ROLES: Record<number, Role | undefined> = {
  [PbRole.SYSTEM]: "system",
  [PbRole.USER]: "user",
  [PbRole.ASSISTANT]: "assistant",
};

const CODES: Record<PreprocessError["kind"], grpc.status> = {
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  resource_exhausted: grpc.status.RESOURCE_EXHAUSTED,
  cancelled: grpc.status.CANCELLED,
  deadline_exceeded: grpc.status.DEADLINE_EXCEEDED,
  unavailable: grpc.status.UNAVAILABLE,
  internal: grpc.status.INTERNAL,
};

/** The one mapping from errors to gRPC statuses; anything that is not a PreprocessError is INTERNAL. */
export function toGrpcError(err: unknown): GrpcError {
  if (err instanceof GrpcError) return err;
  if (err instanceof PreprocessError) return new GrpcError(CODES[err.kind], err.message);
  // NOTE: a bug's message may hold paths and internals: the caller gets a generic one, the log the details.
  return new GrpcError(grpc.status.INTERNAL, "internal error in the preprocess service");
}

function partFromProto(p: PbContentPart, field: string): ContentPart {
  const part = p.part;
  switch (part.case) {
    case "text":
      return { type: "text", text: part.value };
    case "image": {
      const s = part.value.source;
      if (s.case === "data") return { type: "image", source: { data: s.value } };
      if (s.case === "url") return { type: "image", source: { url: s.value } };
      throw invalid(`${field}.image: set data or url`);
    }
    case "video": {
      const s = part.value.source;
      if (s.case === "data") return { type: "video", source: { data: s.value } };
      if (s.case === "url") return { type: "video", source: { url: s.value } };
      if (s.case === "frames") return { type: "video", source: { frames: s.value.frames } };
      throw invalid(`${field}.video: set data, url or frames`);
    }
    default:
      throw invalid(`${field}: empty content part (set text, image or video)`);
  }
}

function turnFromProto(m: PbChatMessage, i: number): ChatTurn {
  const role = ROLES[m.role];
  if (!role) throw invalid(`messages[${i}].role must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT`);
  return { role, parts: m.parts.map((p, j) => partFromProto(p, `messages[${i}].parts[${j}]`)) };
}

/** Proto request -> domain request. */
export function requestFromProto(req: PbPrepareRequest): PrepareRequest {
  const o = req.options;
  return {
    requestId: req.requestId,
    messages: req.messages.map(turnFromProto),
    rawPrompt: req.rawPrompt,
    promptTokenIds: req.promptTokenIds,
    addGenerationPrompt: req.addGenerationPrompt,
    options: o && {
      maxSliceNums: o.maxSliceNums,
      useImageId: o.useImageId,
      videoFps: o.videoFps,
      videoMaxFrames: o.videoMaxFrames,
      videoMaxSliceNums: o.videoMaxSliceNums,
      maxPromptTokens: o.maxPromptTokens || undefined,
    },
  };
}

/** Domain result -> proto response. */
export function responseToProto(p: PreparedPrompt, ms: number): MessageInitShape<typeof PrepareResponseSchema> {
  const media: MessageInitShape<typeof MediaItemSchema>[] = p.media.map((m) => ({
    modality: m.modality === "video" ? PbModality.VIDEO : PbModality.IMAGE,
    contentHash: m.contentHash,
    sourceWidth: m.sourceWidth,
    sourceHeight: m.sourceHeight,
    gridCols: m.grid?.[0] ?? 0,
    gridRows: m.grid?.[1] ?? 0,
    slices: m.slices.map((s) => ({ width: s.width, height: s.height, rgb: s.rgb, tokenOffset: s.tokenOffset })),
  }));
  return {
    prompt: { tokenIds: p.tokenIds, media, tokenCounts: p.tokenCounts, promptText: p.promptText },
    preprocessMs: ms,
  };
}

/** Request metrics (OpenTelemetry; no-ops unless a meter provider is installed). */
interface Meters {
  requests: Counter;
  duration: Histogram;
  tokens: Counter;
}

function meters(): Meters {
  const m = metrics.getMeter("preprocess");
  return {
    requests: m.createCounter("preprocess_requests_total", { description: "Prepare calls by gRPC status" }),
    duration: m.createHistogram("preprocess_duration_ms", { description: "Prepare latency", unit: "ms" }),
    tokens: m.createCounter("preprocess_prompt_tokens_total", { description: "Prompt tokens by modality" }),
  };
}

/** Logs one line per call (pino-compatible). */
export interface ServiceLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Registers PreprocessService.Prepare on `server`. */
export function registerPreprocessService(server: grpc.Server, deps: PrepareDeps, log?: ServiceLogger): void {
  const m = meters();
  addService(server, PreprocessService, {
    async prepare(req: PbPrepareRequest, ctx: CallContext) {
      const t0 = performance.now();
      try {
        const prepared = await prepare(requestFromProto(req), deps, ctx.signal);
        const ms = performance.now() - t0;
        const c = prepared.tokenCounts;
        m.requests.add(1, { code: "OK" });
        m.duration.record(ms);
        m.tokens.add(c.text, { modality: "text" });
        m.tokens.add(c.image, { modality: "image" });
        m.tokens.add(c.video, { modality: "video" });
        log?.info(
          { requestId: req.requestId, ms: Math.round(ms), tokens: c, media: prepared.media.length },
          "prepared",
        );
        return responseToProto(prepared, ms);
      } catch (err) {
        const e = toGrpcError(err);
        m.requests.add(1, { code: e.codeName });
        const detail =
          err instanceof PreprocessError ? err.detail : err instanceof Error ? (err.stack ?? err.message) : String(err);
        log?.warn({ requestId: req.requestId, code: e.codeName, err: e.message, detail }, "prepare failed");
        throw e;
      }
    },
  });
}
