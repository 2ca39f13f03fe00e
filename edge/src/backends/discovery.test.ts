import { describe, expect, it } from "vitest";
import { FakeGpu } from "../testing/fakes";
import { GpuDiscovery, parseTarget, type Resolver } from "./discovery";
import { GpuPool } from "./gpu-pool";
import type { GenerateInput } from "./types";

class ClosableGpu extends FakeGpu {
  closed = 0;
  close(): void {
    this.closed++;
  }
}

/** A resolver whose answers the test sets per hostname; an Error answer makes the lookup fail. */
function fakeDns(): { resolve: Resolver; answers: Map<string, string[] | Error>; lookups: string[] } {
  const answers = new Map<string, string[] | Error>();
  const lookups: string[] = [];
  return {
    answers,
    lookups,
    resolve: async (host) => {
      lookups.push(host);
      const a = answers.get(host);
      if (a instanceof Error) throw a;
      if (!a) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
      return a;
    },
  };
}

function setup(entries: string[]) {
  const dns = fakeDns();
  const pool = new GpuPool([]);
  const made = new Map<string, ClosableGpu[]>();
  const changes: [string[], string[]][] = [];
  const errors: string[] = [];
  const discovery = new GpuDiscovery(
    pool,
    entries,
    (address) => {
      const g = new ClosableGpu(address);
      made.set(address, [...(made.get(address) ?? []), g]);
      return g;
    },
    dns.resolve,
    {
      onChange: (added, removed) => changes.push([added, removed]),
      onError: (entry, err) => errors.push(`${entry}: ${err.message}`),
    },
  );
  const addresses = () => pool.replicas.map((r) => r.backend.address);
  return { dns, pool, made, changes, errors, discovery, addresses };
}

const input: GenerateInput = {
  requestId: "r1",
  priority: 0,
  prompt: {
    tokenIds: [1, 2, 3],
    promptText: "",
    tokenCounts: { total: 3, text: 3, image: 0, video: 0 },
    media: [],
  },
  params: {
    maxTokens: 3,
    minTokens: 0,
    stop: [],
    stopTokenIds: [],
    ignoreEos: false,
    n: 1,
    beamWidth: 1,
    logprobs: false,
    topLogprobs: 0,
  },
};

describe("parseTarget", () => {
  it("splits host:port and [v6]:port and names a bad entry", () => {
    expect(parseTarget("gpu.ns.svc.cluster.local:50062")).toEqual({ host: "gpu.ns.svc.cluster.local", port: 50062 });
    expect(parseTarget("[fd00::1]:7")).toEqual({ host: "fd00::1", port: 7 });
    expect(() => parseTarget("gpu-service")).toThrow('GPU_SERVICE_URLS: "gpu-service" is not host:port');
    expect(() => parseTarget("gpu:99999")).toThrow('"gpu:99999" is not host:port');
  });
});

describe("GpuDiscovery", () => {
  it("keeps IP entries fixed and turns every address of a hostname into a replica", async () => {
    const t = setup(["10.0.0.1:50062", "gpu-headless.ml.svc:50062", "localhost:9"]);
    expect(t.addresses()).toEqual(["10.0.0.1:50062", "localhost:9"]);
    expect(t.discovery.dynamic).toBe(true);
    t.dns.answers.set("gpu-headless.ml.svc", ["10.1.0.4", "fd00::9", "10.1.0.4"]);
    await t.discovery.refresh();
    expect(t.dns.lookups).toEqual(["gpu-headless.ml.svc"]);
    expect(t.addresses()).toEqual(["10.0.0.1:50062", "localhost:9", "10.1.0.4:50062", "[fd00::9]:50062"]);
    expect(t.changes).toEqual([[["10.1.0.4:50062", "[fd00::9]:50062"], []]]);
    // Nothing changed: no event, no new backend.
    await t.discovery.refresh();
    expect(t.changes).toHaveLength(1);
    expect(t.made.get("10.1.0.4:50062")).toHaveLength(1);
  });

  it("does not look anything up when every entry is an IP", async () => {
    const t = setup(["127.0.0.1:1", "[::1]:2"]);
    expect(t.discovery.dynamic).toBe(false);
    await t.discovery.refresh();
    expect(t.dns.lookups).toEqual([]);
    expect(t.addresses()).toEqual(["127.0.0.1:1", "[::1]:2"]);
  });

  it("drops a removed address only after its in-flight stream ends, then closes its channel", async () => {
    const t = setup(["gpu:50062"]);
    t.dns.answers.set("gpu", ["10.1.0.4", "10.1.0.5"]);
    await t.discovery.refresh();
    const [a, b] = t.pool.replicas.map((r) => r.backend as ClosableGpu) as [ClosableGpu, ClosableGpu];
    a.script = { tokenDelayMs: 5 };
    b.info_ = { ...b.info_, queueDepth: 50 }; // steer the stream to a
    await t.pool.poll();
    const stream = t.pool.generate(input, {})[Symbol.asyncIterator]();
    const first = await stream.next();
    expect(first.value).toMatchObject({ type: "token", text: "w0 " });
    expect(t.pool.replicas[0]?.inflight).toBe(1);

    t.dns.answers.set("gpu", ["10.1.0.5", "10.1.0.6"]);
    await t.discovery.refresh();
    expect(t.changes.at(-1)).toEqual([["10.1.0.6:50062"], ["10.1.0.4:50062"]]);
    // Still in the pool while streaming, but no longer picked; /health ignores it.
    expect(t.addresses()).toEqual(["10.1.0.4:50062", "10.1.0.5:50062", "10.1.0.6:50062"]);
    expect(t.pool.pick()?.backend.address).toBe("10.1.0.6:50062");
    expect(a.closed).toBe(0);

    const rest: string[] = [];
    for (let x = await stream.next(); !x.done; x = await stream.next()) rest.push(x.value.type);
    expect(rest).toEqual(["token", "token", "choice_end", "final"]);
    expect(t.addresses()).toEqual(["10.1.0.5:50062", "10.1.0.6:50062"]);
    await Promise.resolve();
    expect(a.closed).toBe(1);
    expect(b.closed).toBe(0);
  });

  it("takes back an address that returns while it is still draining", async () => {
    const t = setup(["gpu:1"]);
    t.dns.answers.set("gpu", ["10.0.0.1"]);
    await t.discovery.refresh();
    const replica = t.pool.replicas[0];
    if (!replica) throw new Error("no replica");
    replica.inflight = 1; // a stream is open on it
    t.dns.answers.set("gpu", []);
    await t.discovery.refresh();
    expect(replica.removal).toBeDefined();
    expect(t.pool.anyHealthy()).toBe(false);
    t.dns.answers.set("gpu", ["10.0.0.1"]);
    await t.discovery.refresh();
    expect(t.pool.replicas).toEqual([replica]);
    expect(replica.removal).toBeUndefined();
    expect(t.pool.anyHealthy()).toBe(true);
    // The second backend made for the address is closed unused; the draining one stays.
    const made = t.made.get("10.0.0.1:1") ?? [];
    expect(made.map((g) => g.closed)).toEqual([0, 1]);
    expect(replica.backend).toBe(made[0]);
  });

  it("keeps the previous addresses when a lookup fails", async () => {
    const t = setup(["gpu:1"]);
    t.dns.answers.set("gpu", ["10.0.0.1", "10.0.0.2"]);
    await t.discovery.refresh();
    t.dns.answers.set("gpu", new Error("queryA ETIMEOUT gpu"));
    await t.discovery.refresh();
    expect(t.errors).toEqual(["gpu:1: queryA ETIMEOUT gpu"]);
    expect(t.addresses()).toEqual(["10.0.0.1:1", "10.0.0.2:1"]);
  });

  it("starts empty when the name does not resolve yet: requests get 'no healthy backend'", async () => {
    const t = setup(["gpu:1"]);
    await t.discovery.refresh();
    expect(t.errors).toEqual(["gpu:1: getaddrinfo ENOTFOUND gpu"]);
    expect(t.addresses()).toEqual([]);
    expect(t.pool.anyHealthy()).toBe(false);
    await expect(t.pool.generate(input, {}).next()).rejects.toThrow("no healthy gpu-service backend");
    t.dns.answers.set("gpu", ["10.0.0.3"]);
    await t.discovery.refresh();
    expect(t.addresses()).toEqual(["10.0.0.3:1"]);
  });

  it("re-resolves on its timer and closes every channel on close()", async () => {
    const t = setup(["gpu:1", "10.9.9.9:2"]);
    t.dns.answers.set("gpu", ["10.0.0.1"]);
    t.discovery.start(10);
    await expect.poll(() => t.addresses()).toEqual(["10.9.9.9:2", "10.0.0.1:1"]);
    t.discovery.close();
    const seen = t.dns.lookups.length;
    await new Promise((r) => setTimeout(r, 40));
    expect(t.dns.lookups.length).toBe(seen);
    expect([...t.made.values()].flat().map((g) => g.closed)).toEqual([1, 1]);
  });
});
