import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { logCorrectlyRounded } from "./correct-log";
import { imagePlaceholder } from "./placeholder";
import { ensureDivide, gridCandidates, roundHalfEven, type Size, sliceCount, sliceGeometry } from "./slice";

const GOLDEN = new URL("../../../../shared/golden/preprocess/", import.meta.url);

interface GeometryCase {
  width: number;
  height: number;
  max_slice_nums: number;
  use_image_id: boolean;
  note: string;
  grid_slicing: [number, number] | null;
  grid_placeholder: [number, number] | null;
  candidates: { grid: [number, number]; error: number; error_hex: string }[] | null;
  overview: [number, number];
  refine: [number, number] | null;
  tiles: [number, number][];
  tgt_sizes?: [number, number][];
  placeholder?: string;
  num_slices?: number;
  error: string | null;
}

const cases = (JSON.parse(readFileSync(new URL("cases.json", GOLDEN), "utf8")) as { cases: GeometryCase[] }).cases;

/** Parses Python's float.hex() output exactly. */
function fromPythonHex(h: string): number {
  const m = /^(-?)0x([01])\.([0-9a-f]+)p([+-]\d+)$/.exec(h);
  if (!m) throw new Error(`bad hex float ${h}`);
  const frac = m[3] as string;
  const v = (Number(m[2]) + Number.parseInt(frac, 16) / 16 ** frac.length) * 2 ** Number(m[4]);
  return m[1] ? -v : v;
}

describe("slicing geometry matches golden/preprocess/cases.json", () => {
  it("has the public cases", () => {
    expect(cases.length).toBe(30);
  });

  for (const c of cases) {
    const name = `${c.width}x${c.height} M=${c.max_slice_nums} (${c.note})`;
    if (c.error) {
      it(`rejects ${name}`, () => {
        expect(() => sliceGeometry(c.width, c.height, c.max_slice_nums)).toThrow(/height 1 px is not supported/);
      });
      continue;
    }
    it(name, () => {
      const g = sliceGeometry(c.width, c.height, c.max_slice_nums);
      expect(g.gridSlicing).toEqual(c.grid_slicing);
      expect(g.gridPlaceholder).toEqual(c.grid_placeholder);
      expect(g.overview).toEqual(c.overview);
      expect(g.refine).toEqual(c.refine);
      const tile = g.tile;
      const tiles: Size[] = tile ? Array.from({ length: sliceCount(g) - 1 }, () => tile) : [];
      expect(tiles).toEqual(c.tiles);
      expect(sliceCount(g)).toBe(c.num_slices);
      const tgt = [g.overview, ...tiles].map(([w, h]) => [h / 14, w / 14]);
      expect(tgt).toEqual(c.tgt_sizes);
      expect(imagePlaceholder(g.gridPlaceholder, 0, c.use_image_id)).toBe(c.placeholder);
      // Every candidate's float64 error bit for bit (needs a correctly rounded log).
      const cands = gridCandidates(c.width, c.height, c.max_slice_nums);
      expect(cands.map((x) => x.grid)).toEqual((c.candidates ?? []).map((x) => x.grid));
      expect(cands.map((x) => x.error)).toEqual((c.candidates ?? []).map((x) => fromPythonHex(x.error_hex)));
    });
  }
});

describe("numeric helpers", () => {
  it("rounds half to even like Python", () => {
    expect([0.5, 1.5, 2.5, 3.5, -2.5, 2.4, 2.6].map(roundHalfEven)).toEqual([0, 2, 2, 4, -2, 2, 3]);
    expect(ensureDivide(35, 14)).toBe(28);
    expect(ensureDivide(1001, 2)).toBe(1000);
    expect(ensureDivide(3, 14)).toBe(14);
  });

  it("logs are correctly rounded where Math.log is not", () => {
    expect(logCorrectlyRounded(3)).toBe(fromPythonHex("0x1.193ea7aad030bp+0"));
    expect(logCorrectlyRounded(1)).toBe(0);
    expect(logCorrectlyRounded(0.5)).toBe(-Math.LN2);
    expect(logCorrectlyRounded(2 ** -1074)).toBe(-744.4400719213812);
  });

  it("rejects sizes the reference cannot process", () => {
    expect(() => sliceGeometry(1, 1, 9)).toThrow(/height 1 px/);
    expect(() => sliceGeometry(640, 3, 9)).toThrow(/height 3 px/);
    expect(() => sliceGeometry(0, 10, 9)).toThrow(/positive integers/);
    expect(() => sliceGeometry(10, 10, 0)).toThrow(/max_slice_nums must be a positive integer/);
  });
});
