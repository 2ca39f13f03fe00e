import { describe, expect, it } from "vitest";
import { setup } from "../testing/app-harness";
import type { FakeGpu } from "../testing/fakes";
import { EDGE_VERSION } from "./health";

describe("probes: /livez, /readyz, /ping, /version", () => {
  it("answers /livez while the edge runs, whatever the backends' state; readiness follows the backends", async () => {
    // One failed poll ejects here; the default (3 in a row) is tested with the pool.
    const s = setup({ API_KEYS: "k1", GPU_EJECT_AFTER_FAILURES: "1" });
    for (const path of ["/readyz", "/ping", "/health"]) expect((await s.app.request(path)).status).toBe(200);
    expect((await s.app.request("/ping", { method: "POST" })).status).toBe(200);
    (s.gpus[0] as FakeGpu).up = false;
    const live = await s.app.request("/livez");
    expect(live.status).toBe(200);
    expect(await live.json()).toEqual({ status: "ok" });
    for (const path of ["/readyz", "/ping", "/health"]) expect((await s.app.request(path)).status).toBe(503);
    expect((await s.app.request("/ping", { method: "POST" })).status).toBe(503);
    s.pre.up = false;
    expect((await s.app.request("/livez")).status).toBe(200);
  });

  it("reports the version like vLLM's /version, without an API key", async () => {
    const s = setup({ API_KEYS: "k1" });
    const res = await s.app.request("/version");
    expect(res.status).toBe(200);
    expect(EDGE_VERSION).toMatch(/^\d+\.\d+\.\d+/);
    expect(await res.json()).toEqual({ version: EDGE_VERSION });
  });
});
