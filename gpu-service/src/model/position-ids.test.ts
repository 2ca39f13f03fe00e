import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { axisBuckets, visionPositionIds } from "./position-ids";
import { goldenDir } from "./testing";

const golden = JSON.parse(readFileSync(join(goldenDir(), "preprocess", "vision_position_ids.json"), "utf8")) as {
  buckets: Record<string, number[]>;
  n_differing_from_floor: number[];
  grid_25x38_ids: number[];
};

describe("vision position ids (MINICPMV26.md §4.2)", () => {
  it("torch-avx2 emulation matches the reference buckets for n = 1..100", () => {
    for (let n = 1; n <= 100; n++) expect(Array.from(axisBuckets(n)), `n=${n}`).toEqual(golden.buckets[String(n)]);
  });

  it("exact floor differs exactly where the reference says", () => {
    const differ: number[] = [];
    for (let n = 1; n <= 100; n++)
      if (JSON.stringify(Array.from(axisBuckets(n, "floor"))) !== JSON.stringify(golden.buckets[String(n)]))
        differ.push(n);
    expect(differ).toEqual(golden.n_differing_from_floor);
    expect(Array.from(axisBuckets(25, "floor")).slice(4, 6)).toEqual([11, 14]);
    expect(Array.from(axisBuckets(25)).slice(4, 6)).toEqual([11, 13]);
  });

  it("builds the row-major 25x38 grid", () => {
    expect(Array.from(visionPositionIds(25, 38), Number)).toEqual(golden.grid_25x38_ids);
  });

  it("rejects a non-positive count", () => {
    expect(() => axisBuckets(0)).toThrow("patch count: must be a positive integer, got 0");
  });
});
