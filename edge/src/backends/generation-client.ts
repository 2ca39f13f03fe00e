/** One gpu-service replica over gRPC: domain GenerateInput in, domain GenerateEvents out. */
import {
  GenerationService,
  Modality,
  FinishReason as PbFinishReason,
  type TokenLogprob as PbTokenLogprob,
} from "@minicpmv/proto";
import { createClient, type ServiceClient } from "@minicpmv/proto/grpc";
import { callOptions, HealthChecker, toEdgeError } from "./grpc-common";
import type {
  BackendInfo,
  CallOpts,
  FinishReason,
  GenerateEvent,
  GenerateInput,
  GenerationBackend,
  StructuredSpec,
  TokenLogprob,
} from "./types";

const FINISH: Record<number, FinishReason> = {
  [PbFinishReason.STOP]: "stop",
  [PbFinishReason.LENGTH]: "length",
  [PbFinishReason.ABORT]: "abort",
};

function logprobFromPb(l: PbTokenLogprob): TokenLogprob {
  const entry = (t: PbTokenLogprob["top"][number] | undefined) => ({
    tokenId: t?.tokenId ?? 0,
    token: t?.token ?? "",
    logprob: t?.logprob ?? 0,
    bytes: t?.bytes ?? new Uint8Array(),
  });
  return { chosen: entry(l.chosen), top: l.top.map(entry) };
}

/** GenerationService.Generate / Info and health over one gRPC channel. */
export class GrpcGenerationBackend implements GenerationBackend {
  private readonly client: ServiceClient<typeof GenerationService.method>;
  private readonly health: HealthChecker;

  constructor(
    readonly address: string,
    maxMessageBytes: number,
  ) {
    this.client = createClient(GenerationService, address, { maxMessageBytes });
    this.health = new HealthChecker(address);
  }

  async *generate(input: GenerateInput, opts: CallOpts): AsyncIterable<GenerateEvent> {
    const p = input.params;
    const prompt = input.prompt;
    const stream = this.client.generate(
      {
        requestId: input.requestId,
        priority: input.priority,
        prompt: {
          tokenIds: prompt.tokenIds,
          promptText: prompt.promptText,
          tokenCounts: prompt.tokenCounts,
          media: prompt.media.map((m) => ({
            modality: m.modality === "video" ? Modality.VIDEO : Modality.IMAGE,
            contentHash: m.contentHash,
            slices: m.slices,
            sourceWidth: m.sourceWidth,
            sourceHeight: m.sourceHeight,
            gridCols: m.gridCols,
            gridRows: m.gridRows,
          })),
        },
        params: {
          temperature: p.temperature,
          topP: p.topP,
          topK: p.topK,
          minP: p.minP,
          repetitionPenalty: p.repetitionPenalty,
          presencePenalty: p.presencePenalty,
          frequencyPenalty: p.frequencyPenalty,
          // NOTE: uint64 on the wire; negative OpenAI seeds wrap like a C cast so every int is accepted.
          seed: p.seed === undefined ? undefined : BigInt.asUintN(64, BigInt(p.seed)),
          maxTokens: p.maxTokens,
          minTokens: p.minTokens,
          stop: p.stop,
          stopTokenIds: p.stopTokenIds,
          ignoreEos: p.ignoreEos,
          n: p.n,
          beamWidth: p.beamWidth,
          logprobs: p.logprobs,
          topLogprobs: p.topLogprobs,
          logitBias: p.logitBias ?? {},
          lengthPenalty: p.lengthPenalty,
          skipSpecialTokens: p.skipSpecialTokens,
          ...(p.structured ? { structured: { kind: structuredKind(p.structured) } } : {}),
        },
      },
      callOptions(opts),
    );
    try {
      for await (const res of stream) {
        const ev = res.event;
        if (ev.case === "token") {
          const t = ev.value;
          yield {
            type: "token",
            index: t.index,
            tokenIds: t.tokenIds,
            text: t.text,
            logprobs: t.logprobs.map(logprobFromPb),
          };
        } else if (ev.case === "choiceEnd") {
          const e = ev.value;
          yield {
            type: "choice_end",
            index: e.index,
            finishReason: FINISH[e.finishReason] ?? "stop",
            stopReason: e.stopReason,
          };
        } else if (ev.case === "final") {
          const u = ev.value.usage;
          const t = ev.value.timings;
          const c = u?.promptTokensByModality;
          yield {
            type: "final",
            usage: {
              promptTokens: u?.promptTokens ?? 0,
              promptTokensByModality: {
                text: c?.text ?? 0,
                image: c?.image ?? 0,
                video: c?.video ?? 0,
                total: c?.total ?? 0,
              },
              cachedPromptTokens: u?.cachedPromptTokens ?? 0,
              completionTokens: u?.completionTokens ?? 0,
            },
            timings: {
              queueMs: t?.queueMs ?? 0,
              visionEncodeMs: t?.visionEncodeMs ?? 0,
              prefillMs: t?.prefillMs ?? 0,
              decodeMs: t?.decodeMs ?? 0,
            },
          };
        }
      }
    } catch (err) {
      throw toEdgeError(`gpu-service ${this.address}`, err);
    }
  }

  async info(opts: CallOpts): Promise<BackendInfo> {
    try {
      const r = await this.client.info({}, callOptions(opts));
      return {
        modelName: r.modelName,
        contextLength: r.contextLength,
        blockSize: r.blockSize,
        kvCapacityBlocks: r.kvCapacityBlocks,
        kvUsedBlocks: r.kvUsedBlocks,
        queueDepth: r.queueDepth,
        running: r.running,
        queryNum: r.queryNum,
        ready: r.ready,
      };
    } catch (err) {
      throw toEdgeError(`gpu-service ${this.address}`, err);
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

/** The protobuf oneof of a structured-output spec. */
function structuredKind(s: StructuredSpec) {
  switch (s.kind) {
    case "json_schema":
      return { case: "jsonSchema" as const, value: s.schema };
    case "json_object":
      return { case: "jsonObject" as const, value: true };
    case "regex":
      return { case: "regex" as const, value: s.pattern };
    case "choice":
      return { case: "choice" as const, value: { values: s.choices } };
    case "grammar":
      return { case: "grammar" as const, value: s.ebnf };
    case "structural_tag":
      return { case: "structuralTag" as const, value: s.tag };
  }
}
