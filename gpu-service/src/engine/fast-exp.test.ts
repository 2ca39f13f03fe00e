import { describe, expect, it } from "vitest";
import { fastExp } from "./fast-exp";
import { Rng } from "./sampler";

describe("fastExp", () => {
  it("gives Math.exp's bits over the sampler's range and outside it", () => {
    const rng = new Rng(2024n);
    const x32 = new Float32Array(2);
    let mismatches = 0;
    const check = (x: number) => {
      if (!Object.is(fastExp(x), Math.exp(x))) mismatches++;
    };
    for (let i = 0; i < 400_000; i++) {
      // the sampler's arguments: (float32 logit - float32 max) / T, and raw logit differences
      x32[0] = (rng.next() * 2 - 1) * 40;
      x32[1] = rng.next() * 40;
      check(((x32[0] as number) - (x32[1] as number)) / (0.05 + rng.next() * 2));
      check(-rng.next() * ([1e-9, 0.4, 1.1, 30, 800][i % 5] as number));
    }
    for (const x of [
      0, -0, -1e-300, -0.34657359027997264, -0.3465735902799727, -1.0397207708399179, -707.9, -708, -745.2,
    ])
      check(x);
    for (const x of [1, 0.5, 700, 710, -746, Number.NaN, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY]) check(x);
    expect(mismatches).toBe(0);
  });
});
