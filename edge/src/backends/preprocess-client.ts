/** The preprocess service over gRPC: domain PrepareInput in, domain PreparedPrompt out. */
import {
  Modality,
  type ContentPart as PbContentPart,
  type PreparedPrompt as PbPreparedPrompt,
  PreprocessService,
  Role,
} from "@minicpmv/proto";
import { createClient, type ServiceClient } from "@minicpmv/proto/grpc";
import { callOptions, HealthChecker, toEdgeError } from "./grpc-common";
import type { CallOpts, ContentPart, PreparedPrompt, PrepareInput, PreprocessBackend } from "./types";

const ROLE = { system: Role.SYSTEM, user: Role.USER, assistant: Role.ASSISTANT } as const;

function partToPb(p: ContentPart): Omit<PbContentPart, "$typeName"> {
  switch (p.kind) {
    case "text":
      return { part: { case: "text", value: p.text } };
    case "image": {
      const s = p.source;
      return {
        part: {
          case: "image",
          value: { source: s.kind === "data" ? { case: "data", value: s.data } : { case: "url", value: s.url } },
        },
      } as Omit<PbContentPart, "$typeName">;
    }
    case "video": {
      const s = p.source;
      const source =
        s.kind === "data"
          ? { case: "data" as const, value: s.data }
          : s.kind === "url"
            ? { case: "url" as const, value: s.url }
            : { case: "frames" as const, value: { frames: s.frames } };
      return { part: { case: "video", value: { source } } } as Omit<PbContentPart, "$typeName">;
    }
  }
}

/** Converts the protobuf prompt to the domain type (no pixel copies). */
export function promptFromPb(p: PbPreparedPrompt | undefined): PreparedPrompt {
  const c = p?.tokenCounts;
  return {
    tokenIds: p?.tokenIds ?? [],
    media: (p?.media ?? []).map((m) => ({
      modality: m.modality === Modality.VIDEO ? "video" : "image",
      contentHash: m.contentHash,
      slices: m.slices.map((s) => ({ width: s.width, height: s.height, rgb: s.rgb, tokenOffset: s.tokenOffset })),
      sourceWidth: m.sourceWidth,
      sourceHeight: m.sourceHeight,
      gridCols: m.gridCols,
      gridRows: m.gridRows,
    })),
    tokenCounts: { text: c?.text ?? 0, image: c?.image ?? 0, video: c?.video ?? 0, total: c?.total ?? 0 },
    promptText: p?.promptText ?? "",
  };
}

/** PreprocessService.Prepare and health over one gRPC channel. */
export class GrpcPreprocessBackend implements PreprocessBackend {
  private readonly client: ServiceClient<typeof PreprocessService.method>;
  private readonly health: HealthChecker;

  constructor(
    readonly address: string,
    maxMessageBytes: number,
  ) {
    this.client = createClient(PreprocessService, address, { maxMessageBytes });
    this.health = new HealthChecker(address);
  }

  async prepare(input: PrepareInput, opts: CallOpts): Promise<PreparedPrompt> {
    const o = input.options;
    try {
      const res = await this.client.prepare(
        {
          requestId: input.requestId,
          messages: input.messages.map((m) => ({ role: ROLE[m.role], parts: m.parts.map(partToPb) })),
          rawPrompt: input.rawPrompt,
          promptTokenIds: input.promptTokenIds ?? [],
          options: {
            maxSliceNums: o.maxSliceNums,
            useImageId: o.useImageId,
            videoFps: o.videoFps,
            videoMaxFrames: o.videoMaxFrames,
            videoMaxSliceNums: o.videoMaxSliceNums,
            maxPromptTokens: o.maxPromptTokens ?? 0,
          },
          addGenerationPrompt: input.addGenerationPrompt,
        },
        callOptions(opts),
      );
      return promptFromPb(res.prompt);
    } catch (err) {
      throw toEdgeError("preprocess", err);
    }
  }

  healthy(opts: CallOpts): Promise<boolean> {
    return this.health.check(opts);
  }

  close(): void {
    this.client.close();
    this.health.close();
  }
}
