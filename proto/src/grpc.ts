/**
 * The one adapter between protobuf-es service descriptors and @grpc/grpc-js.
 *
 * Servers implement plain async functions; clients get plain async functions back. Serialisation,
 * deadlines, cancellation (an AbortSignal on both sides) and status codes are handled here and
 * nowhere else.
 *
 * NOTE: this file imports @grpc/grpc-js although STYLE.md lets proto import only @bufbuild/protobuf:
 * every service needs the same adapter, and the packages may not import each other, so the contract
 * package is the one place it can live without being written three times.
 */

import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import {
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  trace,
} from "@opentelemetry/api";
import { noteServiceFile, serveReflection } from "./reflection";

export { grpc };
export const Status = grpc.status;
export type StatusCode = grpc.status;

/** Default cap on one gRPC message (one 1344x1344 image is ~6 MB of slices; a 64-frame video far more). */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

/** An error with a gRPC status code; thrown by handlers, and by clients for non-OK statuses. */
export class GrpcError extends Error {
  override readonly name = "GrpcError";
  constructor(
    readonly code: grpc.status,
    message: string,
    readonly metadata?: grpc.Metadata,
  ) {
    super(message);
  }
  /** The status name, e.g. "RESOURCE_EXHAUSTED". */
  get codeName(): string {
    return grpc.status[this.code] ?? String(this.code);
  }
}

/** What a handler knows about its call. */
export interface CallContext {
  /** Aborted when the client cancels, the deadline passes or the server shuts down. */
  readonly signal: AbortSignal;
  /** The call's deadline, if the client set one. */
  readonly deadline: Date | undefined;
  /** Request metadata (request id, trace context). */
  readonly metadata: grpc.Metadata;
  /** The client's address. */
  readonly peer: string;
  /** Trace context of this call (the server span, child of the caller's span); pass it to spans made later. */
  readonly traceContext: Context;
}

type Methods = GenServiceMethods;
type In<M extends Methods[string]> = MessageShape<M["input"]>;
type OutInit<M extends Methods[string]> = MessageInitShape<M["output"]>;
type Out<M extends Methods[string]> = MessageShape<M["output"]>;

/** Handlers for a service: unary methods return a message, server-streaming ones yield messages. */
export type ServiceImpl<T extends Methods> = {
  [K in keyof T]: T[K]["methodKind"] extends "unary"
    ? (req: In<T[K]>, ctx: CallContext) => Promise<OutInit<T[K]>>
    : T[K]["methodKind"] extends "server_streaming"
      ? (req: In<T[K]>, ctx: CallContext) => AsyncIterable<OutInit<T[K]>>
      : never;
};

/** Per-call client options. */
export interface CallOptions {
  /** Cancels the call when aborted. */
  signal?: AbortSignal | undefined;
  /** Absolute deadline, or milliseconds from now. */
  deadline?: Date | number | undefined;
  /** Metadata to send (request id). */
  metadata?: grpc.Metadata | Record<string, string> | undefined;
  /** Trace context to propagate; defaults to the active context. */
  traceContext?: Context | undefined;
}

/** A typed client: unary methods return a promise, server-streaming ones an async iterable. */
export type ServiceClient<T extends Methods> = {
  [K in keyof T]: T[K]["methodKind"] extends "unary"
    ? (req: MessageInitShape<T[K]["input"]>, opts?: CallOptions) => Promise<Out<T[K]>>
    : T[K]["methodKind"] extends "server_streaming"
      ? (req: MessageInitShape<T[K]["input"]>, opts?: CallOptions) => AsyncIterable<Out<T[K]>>
      : never;
} & { close(): void; channel: grpc.Client };

function serializer<D extends DescMessage>(desc: D) {
  return (msg: MessageInitShape<D>): Buffer => {
    const bytes = toBinary(desc, create(desc, msg));
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(desc: D) {
  return (buf: Buffer): MessageShape<D> => fromBinary(desc, buf);
}

function methodPath(service: DescService, method: DescMethod): string {
  return `/${service.typeName}/${method.name}`;
}

/** grpc-js service definition for a protobuf-es service descriptor. */
export function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    def[m.localName] = {
      path: methodPath(service, m),
      requestStream: m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming",
      requestSerialize: serializer(m.input),
      requestDeserialize: deserializer(m.input),
      responseSerialize: serializer(m.output),
      responseDeserialize: deserializer(m.output),
    } as grpc.MethodDefinition<unknown, unknown>;
  }
  return def as grpc.ServiceDefinition;
}

/** Maps any thrown value to a gRPC status object. */
export function toStatus(err: unknown): grpc.StatusObject {
  if (err instanceof GrpcError) {
    return { code: err.code, details: err.message, metadata: err.metadata ?? new grpc.Metadata() };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: grpc.status.INTERNAL, details: `internal error: ${message}`, metadata: new grpc.Metadata() };
}

const metadataGetter: TextMapGetter<grpc.Metadata> = {
  keys: (md) => Object.keys(md.getMap()),
  get: (md, key) => {
    const v = md.get(key);
    return v.length === 0 ? undefined : v.map(String);
  },
};
const metadataSetter: TextMapSetter<grpc.Metadata> = { set: (md, key, value) => md.set(key, value) };

function startServerSpan(service: DescService, method: DescMethod, md: grpc.Metadata): { span: Span; ctx: Context } {
  const parent = propagation.extract(ROOT_CONTEXT, md, metadataGetter);
  const span = trace.getTracer("minicpmv-grpc").startSpan(
    `${service.typeName}/${method.name}`,
    {
      kind: SpanKind.SERVER,
      attributes: { "rpc.system": "grpc", "rpc.service": service.typeName, "rpc.method": method.name },
    },
    parent,
  );
  const requestId = md.get("x-request-id")[0];
  if (requestId !== undefined) span.setAttribute("request.id", String(requestId));
  return { span, ctx: trace.setSpan(parent, span) };
}

function endSpan(span: Span, err?: unknown): void {
  if (err !== undefined) {
    const st = toStatus(err);
    span.setAttribute("rpc.grpc.status_code", st.code);
    span.setStatus({ code: SpanStatusCode.ERROR, message: st.details });
  } else {
    span.setAttribute("rpc.grpc.status_code", grpc.status.OK);
  }
  span.end();
}

function callContext(
  call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  traceContext: Context,
): {
  ctx: CallContext;
  done: () => void;
} {
  const ac = new AbortController();
  const rawDeadline = call.getDeadline();
  const deadline =
    rawDeadline instanceof Date ? rawDeadline : Number.isFinite(rawDeadline) ? new Date(rawDeadline) : undefined;
  const onCancel = () => ac.abort(new GrpcError(grpc.status.CANCELLED, "the client cancelled the call"));
  call.on("cancelled", onCancel);
  let timer: NodeJS.Timeout | undefined;
  if (deadline) {
    const ms = deadline.getTime() - Date.now();
    const fire = () => ac.abort(new GrpcError(grpc.status.DEADLINE_EXCEEDED, "deadline exceeded"));
    if (ms <= 0) fire();
    else timer = setTimeout(fire, ms);
  }
  return {
    ctx: { signal: ac.signal, deadline, metadata: call.metadata, peer: call.getPeer(), traceContext },
    done: () => {
      if (timer) clearTimeout(timer);
      call.off("cancelled", onCancel);
    },
  };
}

/** Adds a protobuf-es service with its handlers to a grpc-js server. */
export function addService<T extends Methods>(server: grpc.Server, service: GenService<T>, impl: ServiceImpl<T>): void {
  noteServiceFile(server, service.file);
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const m of service.methods) {
    const fn = (impl as Record<string, unknown>)[m.localName];
    if (typeof fn !== "function") throw new Error(`no handler for ${service.typeName}.${m.name}`);
    if (m.methodKind === "unary") {
      handlers[m.localName] = ((call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        const { span, ctx: tctx } = startServerSpan(service, m, call.metadata);
        const { ctx, done } = callContext(call, tctx);
        context
          .with(tctx, () => (fn as (r: unknown, c: CallContext) => Promise<unknown>)(call.request, ctx))
          .then(
            (res) => {
              done();
              endSpan(span);
              cb(null, res);
            },
            (err: unknown) => {
              done();
              endSpan(span, err);
              cb(toStatus(err));
            },
          );
      }) as grpc.handleUnaryCall<unknown, unknown>;
    } else if (m.methodKind === "server_streaming") {
      handlers[m.localName] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
        const { span, ctx: tctx } = startServerSpan(service, m, call.metadata);
        const { ctx, done } = callContext(call, tctx);
        // NOTE: the generator body runs inside pump's awaits, so the span context must wrap pump, not the call.
        void context
          .with(tctx, () =>
            pump(call, (fn as (r: unknown, c: CallContext) => AsyncIterable<unknown>)(call.request, ctx), ctx),
          )
          .then((err) => {
            done();
            endSpan(span, err ?? (ctx.signal.aborted ? ctx.signal.reason : undefined));
          });
      }) as grpc.handleServerStreamingCall<unknown, unknown>;
    } else {
      throw new Error(`${m.methodKind} methods are not supported (${service.typeName}.${m.name})`);
    }
  }
  server.addService(serviceDefinition(service), handlers);
}

/** Writes the handler's messages with backpressure; resolves the error that ended the call, if any. */
async function pump(
  call: grpc.ServerWritableStream<unknown, unknown>,
  it: AsyncIterable<unknown>,
  ctx: CallContext,
): Promise<unknown> {
  try {
    for await (const msg of it) {
      if (ctx.signal.aborted) break;
      if (!call.write(msg)) {
        // Backpressure: wait until grpc-js has flushed, or the call is gone.
        await new Promise<void>((resolve) => {
          const finish = () => {
            call.off("drain", finish);
            ctx.signal.removeEventListener("abort", finish);
            resolve();
          };
          call.once("drain", finish);
          ctx.signal.addEventListener("abort", finish, { once: true });
        });
      }
    }
    if (!ctx.signal.aborted) call.end();
    return undefined;
  } catch (err) {
    // grpc-js ends a server stream with a non-OK status when the call emits an error carrying a code.
    if (!call.cancelled) call.emit("error", toStatus(err));
    return err;
  }
}

/** Call metadata with the active trace context injected (W3C traceparent), so one request is one trace. */
function toMetadata(m: CallOptions["metadata"], traceContext: Context | undefined): grpc.Metadata {
  const md = m instanceof grpc.Metadata ? m.clone() : new grpc.Metadata();
  if (!(m instanceof grpc.Metadata)) for (const [k, v] of Object.entries(m ?? {})) md.set(k, v);
  propagation.inject(traceContext ?? context.active(), md, metadataSetter);
  return md;
}

function toCallOptions(opts: CallOptions | undefined): grpc.CallOptions {
  const d = opts?.deadline;
  return d === undefined ? {} : { deadline: typeof d === "number" ? Date.now() + d : d };
}

/** Wraps a grpc-js ServiceError (or anything else) as a GrpcError. */
export function fromServiceError(err: unknown): GrpcError {
  if (err instanceof GrpcError) return err;
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e?.code === "number") return new GrpcError(e.code, e.details ?? e.message ?? "", e.metadata);
  return new GrpcError(grpc.status.UNKNOWN, err instanceof Error ? err.message : String(err));
}

/** Options for a client or server channel. */
export interface ChannelConfig {
  /** Largest message sent or received, in bytes. */
  maxMessageBytes?: number;
  /** Extra grpc-js channel options. */
  options?: grpc.ChannelOptions;
}

/** grpc-js channel options with explicit message size limits. */
export function channelOptions(cfg: ChannelConfig = {}): grpc.ChannelOptions {
  const max = cfg.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  return {
    "grpc.max_receive_message_length": max,
    "grpc.max_send_message_length": max,
    "grpc.keepalive_time_ms": 30_000,
    ...cfg.options,
  };
}

/** Creates a typed client for a service at `address` (host:port), plaintext. */
export function createClient<T extends Methods>(
  service: GenService<T>,
  address: string,
  cfg: ChannelConfig = {},
): ServiceClient<T> {
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(service), service.typeName);
  const client = new Ctor(address, grpc.credentials.createInsecure(), channelOptions(cfg));
  const out: Record<string, unknown> = { close: () => client.close(), channel: client };
  for (const m of service.methods) {
    const path = methodPath(service, m);
    const ser = serializer(m.input);
    const de = deserializer(m.output);
    if (m.methodKind === "unary") {
      out[m.localName] = (req: unknown, opts?: CallOptions) =>
        new Promise((resolve, reject) => {
          if (opts?.signal?.aborted) {
            reject(new GrpcError(grpc.status.CANCELLED, "cancelled before the call started"));
            return;
          }
          const call = client.makeUnaryRequest(
            path,
            ser as (v: unknown) => Buffer,
            de,
            req,
            toMetadata(opts?.metadata, opts?.traceContext),
            toCallOptions(opts),
            (err, res) => {
              opts?.signal?.removeEventListener("abort", onAbort);
              if (err) reject(fromServiceError(err));
              else resolve(res);
            },
          );
          const onAbort = () => call.cancel();
          opts?.signal?.addEventListener("abort", onAbort, { once: true });
        });
    } else if (m.methodKind === "server_streaming") {
      out[m.localName] = (req: unknown, opts?: CallOptions) => streamCall(client, path, ser, de, req, opts);
    }
  }
  return out as ServiceClient<T>;
}

async function* streamCall(
  client: grpc.Client,
  path: string,
  ser: (v: never) => Buffer,
  de: (b: Buffer) => unknown,
  req: unknown,
  opts: CallOptions | undefined,
): AsyncGenerator<unknown> {
  if (opts?.signal?.aborted) throw new GrpcError(grpc.status.CANCELLED, "cancelled before the call started");
  const call = client.makeServerStreamRequest(
    path,
    ser as (v: unknown) => Buffer,
    de,
    req,
    toMetadata(opts?.metadata, opts?.traceContext),
    toCallOptions(opts),
  );
  const onAbort = () => call.cancel();
  opts?.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for await (const msg of call) yield msg;
  } catch (err) {
    throw fromServiceError(err);
  } finally {
    opts?.signal?.removeEventListener("abort", onAbort);
    // Breaking out of the loop early cancels the server side too.
    call.cancel();
  }
}

/**
 * Starts a grpc-js server on `host:port` (port 0 picks a free one) and resolves the bound port. The server
 * also answers gRPC reflection for the services added before this call.
 */
export async function listen(server: grpc.Server, host: string, port: number): Promise<number> {
  serveReflection(server);
  return await new Promise((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
      if (err) reject(err);
      else resolve(bound);
    });
  });
}

/** A grpc-js server with the project's message size limits. */
export function createServer(cfg: ChannelConfig = {}): grpc.Server {
  return new grpc.Server(channelOptions(cfg));
}

/** Stops accepting calls, waits up to `graceMs` for in-flight ones, then cancels the rest. */
export async function shutdown(server: grpc.Server, graceMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
