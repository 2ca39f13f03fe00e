/**
 * Finds gpu-service replicas from `GPU_SERVICE_URLS` entries, for Kubernetes headless Services.
 *
 *   "10.0.0.7:50062"                      IP literal (or "localhost"): one fixed replica
 *   "gpu-headless.ns.svc.cluster.local:50062"
 *        └─ every interval: dns.lookup(all) ─> 10.1.0.4, 10.1.0.9 ─> replicas "10.1.0.4:50062", "10.1.0.9:50062"
 *
 * An address that disappears from DNS leaves the pool once its in-flight streams end (GpuPool.remove); its
 * gRPC channel is closed then. A failed lookup keeps the entry's previous addresses: a DNS hiccup must not
 * empty the pool, and replicas that really went away fail their health checks anyway.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { GpuPool } from "./gpu-pool";
import type { GenerationBackend } from "./types";

/** Resolves a hostname to all of its addresses (IPv4 and IPv6). */
export type Resolver = (hostname: string) => Promise<string[]>;

/** `dns.lookup(hostname, { all: true })`, as the OS resolver (and Kubernetes' DNS) answers it. */
export const dnsResolver: Resolver = async (hostname) =>
  (await lookup(hostname, { all: true, order: "ipv4first" })).map((a) => a.address);

/** A backend that discovery may close when its address leaves DNS. */
export type DiscoveredBackend = GenerationBackend & { close?(): void };

/** Logs and metrics hooks. */
export interface DiscoveryEvents {
  /** The replica set changed after a lookup. */
  onChange?(added: string[], removed: string[]): void;
  /** A lookup failed; the entry keeps its previous addresses. */
  onError?(entry: string, err: Error): void;
}

/** Splits "host:port" or "[v6]:port"; throws naming the entry when it is malformed. */
export function parseTarget(entry: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(entry) ?? /^([^:[\]]+):(\d+)$/.exec(entry);
  const port = Number(m?.[2]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`GPU_SERVICE_URLS: "${entry}" is not host:port (IPv6 as [addr]:port)`);
  }
  return { host: m[1] as string, port };
}

/** "host:port" of an IP address, with IPv6 in brackets as gRPC targets need. */
export function formatAddress(ip: string, port: number): string {
  return isIP(ip) === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Keeps a GpuPool's replicas in step with `GPU_SERVICE_URLS` (fixed addresses and re-resolved hostnames). */
export class GpuDiscovery {
  /** Addresses of IP-literal entries: always in the pool. */
  private readonly fixed = new Set<string>();
  /** Hostname entries and the addresses each resolved to last time. */
  private readonly named = new Map<string, { host: string; port: number; addresses: string[]; failing?: boolean }>();
  /** Addresses this discovery has put in the pool. */
  private readonly current = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly pool: GpuPool,
    entries: readonly string[],
    private readonly makeBackend: (address: string) => DiscoveredBackend,
    private readonly resolve: Resolver = dnsResolver,
    public events: DiscoveryEvents = {},
  ) {
    for (const entry of entries) {
      const t = parseTarget(entry);
      if (isIP(t.host) !== 0 || t.host === "localhost") {
        this.fixed.add(entry);
        this.add(entry);
      } else {
        this.named.set(entry, { ...t, addresses: [] });
      }
    }
  }

  /** True when some entry is a hostname (so periodic lookups are needed). */
  get dynamic(): boolean {
    return this.named.size > 0;
  }

  /** Looks every hostname up once and updates the pool (concurrent calls share one refresh). */
  refresh(): Promise<void> {
    this.refreshing ??= this.refreshOnce().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async refreshOnce(): Promise<void> {
    await Promise.all(
      [...this.named].map(async ([entry, n]) => {
        try {
          n.addresses = [...new Set(await this.resolve(n.host))].map((ip) => formatAddress(ip, n.port));
          n.failing = false;
        } catch (err) {
          // Report the first failure of a run only: a name that stays unresolvable would log every poll.
          if (!n.failing) this.events.onError?.(entry, err instanceof Error ? err : new Error(String(err)));
          n.failing = true;
        }
      }),
    );
    const wanted = new Set(this.fixed);
    for (const n of this.named.values()) for (const a of n.addresses) wanted.add(a);
    const added = [...wanted].filter((a) => !this.current.has(a));
    const removed = [...this.current].filter((a) => !wanted.has(a));
    for (const a of added) this.add(a);
    for (const a of removed) this.retire(a);
    if (added.length > 0 || removed.length > 0) this.events.onChange?.(added, removed);
  }

  private add(address: string): void {
    if (this.current.has(address)) return;
    this.current.add(address);
    const backend = this.makeBackend(address);
    // false: the address was still draining after an earlier removal, and the pool took that replica back.
    if (!this.pool.add(backend)) backend.close?.();
  }

  private retire(address: string): void {
    this.current.delete(address);
    const backend = this.pool.replicas.find((r) => r.backend.address === address)?.backend as
      | DiscoveredBackend
      | undefined;
    void this.pool.remove(address).then((left) => {
      if (left) backend?.close?.();
    });
  }

  /** Re-resolves every `intervalMs` when some entry is a hostname (the timer does not keep the process alive). */
  start(intervalMs: number): void {
    if (this.timer || !this.dynamic) return;
    this.timer = setInterval(() => void this.refresh(), intervalMs);
    this.timer.unref();
  }

  /** Stops re-resolving. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Stops re-resolving and closes every replica's channel (at shutdown, once the HTTP server has drained). */
  close(): void {
    this.stop();
    for (const r of this.pool.replicas) (r.backend as DiscoveredBackend).close?.();
  }
}
