/** The standard grpc.health.v1 service, shared by every backend. */
import { create } from "@bufbuild/protobuf";
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/grpc/health/v1/health_pb";
import { addService, type CallContext, GrpcError, grpc } from "./grpc";

export { Health, ServingStatus };

/** Serving status per service name ("" is the whole server); Watch streams every change. */
export class HealthService {
  private readonly status = new Map<string, ServingStatus>();
  private readonly watchers = new Set<(service: string) => void>();

  constructor(services: string[] = []) {
    for (const s of ["", ...services]) this.status.set(s, ServingStatus.NOT_SERVING);
  }

  /** Sets the status of `service` ("" for the whole server). */
  set(service: string, status: ServingStatus): void {
    this.status.set(service, status);
    for (const w of this.watchers) w(service);
  }

  /** Sets every known service to `status`. */
  setAll(status: ServingStatus): void {
    for (const s of this.status.keys()) this.set(s, status);
  }

  /** Registers the Health service on a grpc-js server. */
  register(server: grpc.Server): void {
    addService(server, Health, {
      check: async (req) => {
        const s = this.status.get(req.service);
        if (s === undefined) throw new GrpcError(grpc.status.NOT_FOUND, `unknown service "${req.service}"`);
        return { status: s };
      },
      watch: (req, ctx) => this.watch(req.service, ctx),
    });
  }

  private async *watch(service: string, ctx: CallContext): AsyncIterable<HealthCheckResponse> {
    const queue: ServingStatus[] = [this.status.get(service) ?? ServingStatus.SERVICE_UNKNOWN];
    let wake: (() => void) | undefined;
    const onChange = (s: string) => {
      if (s !== service) return;
      queue.push(this.status.get(service) ?? ServingStatus.SERVICE_UNKNOWN);
      wake?.();
    };
    this.watchers.add(onChange);
    const onAbort = () => wake?.();
    ctx.signal.addEventListener("abort", onAbort);
    try {
      while (!ctx.signal.aborted) {
        const next = queue.shift();
        if (next !== undefined) yield create(HealthCheckResponseSchema, { status: next });
        else await new Promise<void>((r) => (wake = r));
      }
    } finally {
      this.watchers.delete(onChange);
      ctx.signal.removeEventListener("abort", onAbort);
    }
  }
}
