/**
 * Routes Generate calls over several gpu-service replicas.
 *
 *   request ──> pick(least load among healthy, untried) ──> replica.generate()
 *                  ^                                           │
 *                  └── failed before its first event: retry ───┘   (failed after: the error reaches the client)
 *
 *   poll every interval: Info (queue depth, KV usage) + grpc.health.v1 per replica
 *   a replica is ejected after `ejectAfterFailures` consecutive transport failures (a poll that times out or
 *   cannot connect, a Generate that ends UNAVAILABLE), or at once when it answers that it is not ready; one
 *   good poll takes it back. Nothing a request does wrong (INVALID_ARGUMENT, a message that does not
 *   serialize, any 4xx, an INTERNAL answer about one request) ever changes a replica's health.
 *
 * Load = queue_depth + kv_used/kv_capacity + requests this edge has open on the replica; the last term covers
 * the requests started since the previous poll. Ties go round-robin.
 *
 * Replicas can be added and removed at run time (DNS discovery, ./discovery.ts): a removed replica gets no new
 * requests and leaves the pool when its last in-flight stream ends.
 */
import { EdgeError, isTransportFailure } from "../errors";
import type { BackendInfo, CallOpts, GenerateEvent, GenerateInput, GenerationBackend } from "./types";

/** A replica as the pool sees it. */
export interface ReplicaState {
  readonly backend: GenerationBackend;
  healthy: boolean;
  /** The last Info answer, if any. */
  info: BackendInfo | undefined;
  /** Generate streams this edge has open on the replica. */
  inflight: number;
  /** Why it was last marked unhealthy (or why its last poll or call failed). */
  lastError: string | undefined;
  /** Transport failures in a row (polls and calls); reset by a good poll or a completed call. */
  failures: number;
  /** Set by {@link GpuPool.remove}: no new requests; dropped from the pool when `inflight` reaches 0. */
  removal?: { done: Promise<boolean>; settle(left: boolean): void };
}

/** Hooks for metrics and logs. */
export interface PoolEvents {
  onHealthChange?(address: string, healthy: boolean, reason: string): void;
  onRetry?(address: string, err: EdgeError): void;
}

/** Settings of the pool. */
export interface PoolOptions {
  /** GPU_EJECT_AFTER_FAILURES: consecutive transport failures that eject a replica (default 3). */
  ejectAfterFailures?: number;
  /** Deadline of one Info/health poll in ms (default 2000). */
  pollTimeoutMs?: number;
}

/** Least-load routing with retry-before-first-token and health tracking. */
export class GpuPool {
  /** The current replicas (the array is updated in place by add/remove). */
  readonly replicas: ReplicaState[];
  private rr = 0;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private readonly ejectAfter: number;
  private readonly pollTimeoutMs: number;

  constructor(
    backends: GenerationBackend[],
    /** Hooks, settable after construction (the app wires its metrics and logger here). */
    public events: PoolEvents = {},
    opts: PoolOptions = {},
  ) {
    this.ejectAfter = Math.max(1, opts.ejectAfterFailures ?? 3);
    this.pollTimeoutMs = opts.pollTimeoutMs ?? 2000;
    // NOTE: may start empty: DNS discovery fills it, and until then requests get "no healthy backend".
    this.replicas = [];
    for (const b of backends) this.add(b);
  }

  /**
   * Adds a replica (optimistically healthy: it is tried until a call or a poll shows it is down). When a
   * replica with the same address is being removed, that one is kept instead and `false` is returned.
   */
  add(backend: GenerationBackend): boolean {
    const old = this.replicas.find((r) => r.backend.address === backend.address);
    if (old?.removal) {
      old.removal.settle(false);
      delete old.removal;
      return false;
    }
    if (old) throw new Error(`gpu-service ${backend.address} is already in the pool`);
    this.replicas.push({ backend, healthy: true, info: undefined, inflight: 0, lastError: undefined, failures: 0 });
    return true;
  }

  /**
   * Stops routing new requests to the replica at `address`; resolves once it has left the pool (its in-flight
   * streams ended), or when {@link add} took it back first. Resolves to whether it left.
   */
  remove(address: string): Promise<boolean> {
    const r = this.replicas.find((x) => x.backend.address === address);
    if (!r) return Promise.resolve(false);
    if (r.removal) return r.removal.done;
    let settle: (left: boolean) => void = () => {};
    const done = new Promise<boolean>((resolve) => {
      settle = resolve;
    });
    r.removal = { done, settle };
    this.dropIfIdle(r);
    return done;
  }

  private dropIfIdle(r: ReplicaState): void {
    if (!r.removal || r.inflight > 0) return;
    this.replicas.splice(this.replicas.indexOf(r), 1);
    r.removal.settle(true);
    delete r.removal;
  }

  /** Starts polling every `intervalMs` (the timer does not keep the process alive). */
  start(intervalMs: number): void {
    if (this.timer) return;
    void this.poll();
    this.timer = setInterval(() => void this.poll(), intervalMs);
    this.timer.unref();
  }

  /** Stops polling. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Polls every replica's Info and health once (concurrent calls share one poll); resolves when done. */
  poll(timeoutMs = this.pollTimeoutMs): Promise<void> {
    this.polling ??= Promise.all(this.replicas.map((r) => this.pollOne(r, timeoutMs))).then(() => {
      this.polling = undefined;
    });
    return this.polling;
  }

  private async pollOne(r: ReplicaState, timeoutMs: number): Promise<void> {
    const opts: CallOpts = { deadline: new Date(Date.now() + timeoutMs) };
    const [ok, info] = await Promise.all([
      r.backend.healthy(opts),
      r.backend.info(opts).catch((err: unknown) => err as Error),
    ]);
    if (info instanceof Error) {
      this.transportFailure(r, `Info failed: ${info.message}`);
      return;
    }
    r.info = info;
    if (!ok) {
      this.transportFailure(r, "health check failed");
      return;
    }
    // An answer, even "not ready", shows the transport works; "not ready" is the replica's own word.
    r.failures = 0;
    this.setHealth(r, info.ready, info.ready ? "health check SERVING" : "not ready");
  }

  /** Counts one transport failure; the replica is ejected once `ejectAfterFailures` happened in a row. */
  private transportFailure(r: ReplicaState, reason: string): void {
    r.failures++;
    r.lastError = reason;
    if (r.failures >= this.ejectAfter) this.setHealth(r, false, reason);
  }

  private setHealth(r: ReplicaState, healthy: boolean, reason: string): void {
    if (!healthy) r.lastError = reason;
    if (r.healthy === healthy) return;
    r.healthy = healthy;
    this.events.onHealthChange?.(r.backend.address, healthy, reason);
  }

  /** Marks a replica unhealthy until a poll finds it SERVING again. */
  markUnhealthy(address: string, reason: string): void {
    const r = this.replicas.find((x) => x.backend.address === address);
    if (r) this.setHealth(r, false, reason);
  }

  /** Counts a transport failure of a call on the replica at `address` (see {@link PoolOptions}). */
  reportTransportFailure(address: string, reason: string): void {
    const r = this.replicas.find((x) => x.backend.address === address);
    if (r) this.transportFailure(r, reason);
  }

  /** True when at least one replica is healthy. */
  anyHealthy(): boolean {
    return this.replicas.some((r) => r.healthy && !r.removal);
  }

  /** The most recent Info of a healthy replica (model name, context length), if any has answered. */
  modelInfo(): BackendInfo | undefined {
    return (this.replicas.find((r) => r.healthy && r.info) ?? this.replicas.find((r) => r.info))?.info;
  }

  /** The load score used for routing (lower is better). */
  static load(r: ReplicaState): number {
    const i = r.info;
    const kv = i && i.kvCapacityBlocks > 0 ? i.kvUsedBlocks / i.kvCapacityBlocks : 0;
    return (i?.queueDepth ?? 0) + kv + r.inflight;
  }

  /** The healthy replica with the least load that is not in `exclude`; null when none is left. */
  pick(exclude: ReadonlySet<ReplicaState> = new Set()): ReplicaState | null {
    const n = this.replicas.length;
    let best: ReplicaState | null = null;
    let bestLoad = Number.POSITIVE_INFINITY;
    const start = this.rr++ % n;
    for (let k = 0; k < n; k++) {
      const r = this.replicas[(start + k) % n] as ReplicaState;
      if (!r.healthy || r.removal || exclude.has(r)) continue;
      const load = GpuPool.load(r);
      if (load < bestLoad) {
        best = r;
        bestLoad = load;
      }
    }
    return best;
  }

  /**
   * Streams a Generate call from the least-loaded replica. When a replica fails before sending its first
   * event (unavailable or out of capacity) the call is retried on another one; once an event has been passed
   * on, errors reach the caller. Only transport failures count against a replica's health.
   */
  async *generate(input: GenerateInput, opts: CallOpts): AsyncGenerator<GenerateEvent> {
    const tried = new Set<ReplicaState>();
    let lastErr: EdgeError | undefined;
    for (;;) {
      const r = this.pick(tried);
      if (!r) {
        throw (
          lastErr ??
          new EdgeError("unavailable", "no healthy gpu-service backend (all replicas failed their health checks)", {
            retryAfterS: 1,
          })
        );
      }
      tried.add(r);
      r.inflight++;
      let started = false;
      try {
        for await (const ev of r.backend.generate(input, opts)) {
          started = true;
          yield ev;
        }
        r.failures = 0;
        return;
      } catch (err) {
        const e =
          err instanceof EdgeError
            ? err
            : new EdgeError("internal", `gpu-service ${r.backend.address}: ${String(err)}`);
        // NOTE: an INTERNAL or INVALID_ARGUMENT answer is about this request (a message that does not
        // serialize reads as INTERNAL), not about the replica: only a transport failure counts, and only one
        // that the client's own cancel did not cause.
        const transport = isTransportFailure(e) && !opts.signal?.aborted;
        if (transport) this.transportFailure(r, e.message);
        const retryable = transport || e.kind === "overloaded";
        if (started || !retryable || opts.signal?.aborted) throw e;
        lastErr = e;
        this.events.onRetry?.(r.backend.address, e);
      } finally {
        r.inflight--;
        this.dropIfIdle(r);
      }
    }
  }
}
