import { describe, expect, it } from "vitest";
import { RateLimiter } from "./rate-limit";

describe("RateLimiter", () => {
  it("refills requests continuously and tells when to retry", () => {
    let now = 0;
    const rl = new RateLimiter(60, 0, () => now);
    for (let i = 0; i < 60; i++) expect(rl.admit("a").ok).toBe(true);
    const no = rl.admit("a");
    expect(no).toEqual({
      ok: false,
      reason: "rate_limit_requests",
      retryAfterS: 1,
      message: "rate limit of 60 requests per minute reached",
    });
    expect(rl.admit("b").ok).toBe(true); // per caller
    now = 1000; // one request refilled
    expect(rl.admit("a").ok).toBe(true);
    expect(rl.admit("a").ok).toBe(false);
  });

  it("charges tokens after the fact and turns a caller in deficit away until refilled", () => {
    let now = 0;
    const rl = new RateLimiter(0, 600, () => now);
    expect(rl.admit("a").ok).toBe(true);
    rl.charge("a", 700); // bucket at -100
    const no = rl.admit("a");
    expect(no.ok).toBe(false);
    if (!no.ok) expect(no.retryAfterS).toBeCloseTo((101 / 600) * 60, 6);
    now = 10_000; // +100 tokens: back to 0, still not > 0
    expect(rl.admit("a").ok).toBe(false);
    now = 10_100; // +1
    expect(rl.admit("a").ok).toBe(true);
  });

  it("admits everything with both limits off", () => {
    const rl = new RateLimiter(0, 0);
    expect(rl.enabled).toBe(false);
    rl.charge("a", 1e9);
    expect(rl.admit("a")).toEqual({ ok: true });
  });
});
