/**
 * What both gRPC clients share: call options, error conversion and the grpc.health.v1 check.
 * Protobuf and grpc-js types stay in this folder.
 */

import { type CallOptions, createClient, fromServiceError, type ServiceClient } from "@minicpmv/proto/grpc";
import { Health, ServingStatus } from "@minicpmv/proto/health";
import { backendError, EdgeError } from "../errors";
import type { CallOpts } from "./types";

/** grpc-js call options for the adapter: signal, deadline and `x-request-id` metadata. */
export function callOptions(opts: CallOpts): CallOptions {
  const out: CallOptions = { signal: opts.signal, deadline: opts.deadline };
  if (opts.requestId) out.metadata = { "x-request-id": opts.requestId };
  return out;
}

/** Converts whatever a gRPC call threw into an EdgeError naming the backend. */
export function toEdgeError(backend: string, err: unknown): EdgeError {
  if (err instanceof EdgeError) return err;
  const g = fromServiceError(err);
  const raw = g.metadata?.get("retry-after")[0];
  const retryAfter = raw === undefined ? undefined : Number(raw);
  return backendError(backend, g.codeName, g.message, Number.isFinite(retryAfter) ? retryAfter : undefined);
}

/** A grpc.health.v1 client for `address`; `check` resolves true only for SERVING, false on any error. */
export class HealthChecker {
  private readonly client: ServiceClient<typeof Health.method>;
  constructor(address: string) {
    this.client = createClient(Health, address);
  }
  async check(opts: CallOpts): Promise<boolean> {
    try {
      const res = await this.client.check({ service: "" }, callOptions(opts));
      return res.status === ServingStatus.SERVING;
    } catch {
      return false;
    }
  }
  close(): void {
    this.client.close();
  }
}
