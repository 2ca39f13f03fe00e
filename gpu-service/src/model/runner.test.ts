import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { normalizePixels } from "./pixels";
import { referenceLlm, referenceVision } from "./reference-forward";
import { createRunnerFromWeights, type OrtModelRunner, type SeqStep } from "./runner";
import { randomWeights, smallShape } from "./testing";

const cacheDir = mkdtempSync(join(tmpdir(), "minicpmv-model-test-"));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

function pseudoRgb(w: number, h: number, seed: number): Uint8Array {
  const out = new Uint8Array(w * h * 3);
  let s = seed;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

// GQA ratios 1, 2, 7; head sizes 16..128; resampler heads 1, 2 and 3; block sizes 4 and 16.
const CONFIGS = [
  { name: "gqa1-d16-rh1", hidden: 32, heads: 2, kvHeads: 2, resamplerHeads: 1, blockSize: 4, slices: 1 },
  { name: "gqa2-d32-rh1", hidden: 128, heads: 4, kvHeads: 2, resamplerHeads: 1, blockSize: 16, slices: 9 },
  { name: "gqa2-d16-rh3", hidden: 96, heads: 6, kvHeads: 3, resamplerHeads: 3, blockSize: 4, slices: 9 },
  { name: "gqa7-d16-rh1", hidden: 224, heads: 14, kvHeads: 2, resamplerHeads: 1, blockSize: 8, slices: 1 },
  { name: "gqa2-d128-rh2", hidden: 256, heads: 2, kvHeads: 1, resamplerHeads: 2, blockSize: 4, slices: 1 },
  { name: "gqa1-d64-rh3", hidden: 192, heads: 3, kvHeads: 3, resamplerHeads: 3, blockSize: 16, slices: 9 },
];

describe.each(CONFIGS)("ONNX graphs vs TypeScript reference: $name", (c) => {
  const cfg = smallShape(c);
  const src = randomWeights(cfg, c.hidden * 31 + c.heads);
  let runner: OrtModelRunner;

  it("builds and opens the graphs", async () => {
    runner = await createRunnerFromWeights(src, { cacheDir, modelName: c.name, numBlocks: 48, blockSize: c.blockSize });
    expect(runner.info.kvBytesPerToken).toBe(2 * 2 * c.kvHeads * (c.hidden / c.heads) * 4);
    expect(runner.info.numBlocks).toBe(48);
  });

  it(`encodes ${c.slices} slice(s) like the reference`, async () => {
    // mixed sizes: batched per size inside the runner, returned in input order
    const sizes =
      c.slices === 1
        ? [[56, 42]]
        : [
            [42, 28],
            [28, 42],
            [42, 28],
            [56, 56],
            [28, 42],
            [42, 28],
            [56, 56],
            [14, 70],
            [42, 28],
          ];
    const slices = sizes.map(([w, h], i) => ({
      width: w as number,
      height: h as number,
      rgb: pseudoRgb(w as number, h as number, i + 1),
    }));
    const out = await runner.encodeSlices(slices);
    expect(out).toHaveLength(slices.length);
    for (const [i, s] of slices.entries()) {
      const ref = referenceVision(cfg, src.map, normalizePixels(s.rgb, s.height, s.width), s.height, s.width);
      expect(maxDiff(out[i] as Float32Array, ref)).toBeLessThan(1e-4);
    }
  });

  it("runs mixed prefill/decode batches over shuffled block tables, and copy-on-write blocks", async () => {
    const V = cfg.llm.vocabSize;
    const hid = cfg.llm.hiddenSize;
    const BS = c.blockSize;
    const tok = (seed: number, n: number) => Array.from({ length: n }, (_, i) => (seed * 97 + i * 31) % V);
    // Full token streams per sequence; A carries 3 embedding rows at positions 2..4.
    const full = { A: tok(1, 12), B: tok(2, 21), C: tok(3, 6) };
    const embRows = Float32Array.from({ length: 3 * hid }, (_, i) => Math.sin(i * 0.37));
    const embA = [{ offset: 2, rows: embRows }];
    // Shuffled physical blocks, disjoint per sequence.
    const perm = [17, 3, 40, 9, 25, 1, 33, 12, 44, 6, 29, 20, 14, 38, 2, 27];
    const tables = { A: perm.slice(0, 4), B: perm.slice(4, 11), C: perm.slice(11, 14) };
    const done = { A: 0, B: 0, C: 0 };
    const check = async (plan: [keyof typeof full, number, boolean][]) => {
      const seqs: SeqStep[] = plan.map(([s, n, want]) => {
        const step: SeqStep = {
          tokenIds: full[s].slice(done[s], done[s] + n),
          pastLen: done[s],
          blockTable: tables[s],
          wantLogits: want,
        };
        if (s === "A" && done.A <= 2) step.embeds = [{ offset: 2 - done.A, rows: embRows }];
        return step;
      });
      const logits = await runner.step(seqs);
      for (const [i, [s, n, want]] of plan.entries()) {
        done[s] += n;
        if (!want) {
          expect(logits[i]).toBeNull();
          continue;
        }
        const ref = referenceLlm(cfg, src.map, full[s].slice(0, done[s]), s === "A" ? embA : [], [
          done[s] - 1,
        ])[0] as Float64Array;
        expect(maxDiff(logits[i] as Float32Array, ref)).toBeLessThan(2e-4);
      }
    };
    await check([
      ["A", 7, true],
      ["B", 9, false],
      ["C", 3, true],
    ]); // prefill chunks of different lengths
    await check([
      ["B", 10, true],
      ["A", 1, true],
      ["C", 1, true],
    ]); // a chunk next to decode steps
    await check([
      ["C", 1, true],
      ["A", 1, false],
      ["B", 1, true],
    ]); // ragged decode
    await check([
      ["A", 3, true],
      ["B", 1, true],
    ]);

    // Fork D from A's first 10 tokens: shared full blocks, last partial block copied, then diverge.
    const prefix = 10;
    const shared = Math.floor(prefix / BS);
    const fresh = [46, 47, 45];
    const tableD = [...tables.A.slice(0, shared), ...fresh];
    if (prefix % BS !== 0) runner.copyBlock(tables.A[shared] as number, fresh[0] as number);
    const newTok = (full.A[prefix] as number) + 1;
    const [lD] = await runner.step([{ tokenIds: [newTok], pastLen: prefix, blockTable: tableD, wantLogits: true }]);
    const refD = referenceLlm(cfg, src.map, [...full.A.slice(0, prefix), newTok], embA, [prefix])[0] as Float64Array;
    expect(maxDiff(lD as Float32Array, refD)).toBeLessThan(2e-4);
  });

  it("rejects bad steps with the field and the limit", async () => {
    await expect(runner.step([{ tokenIds: [1], pastLen: 0, blockTable: [48], wantLogits: true }])).rejects.toThrow(
      "seqs[0].blockTable[0]: block id 48 outside [0, 48)",
    );
    await expect(
      runner.step([{ tokenIds: [1, 2], pastLen: c.blockSize, blockTable: [0], wantLogits: true }]),
    ).rejects.toThrow(/seqs\[0\].blockTable: needs 2 blocks/);
    await expect(
      runner.step([{ tokenIds: [cfg.llm.vocabSize], pastLen: 0, blockTable: [0], wantLogits: true }]),
    ).rejects.toThrow(`seqs[0].tokenIds[0]: token id ${cfg.llm.vocabSize} outside [0, ${cfg.llm.vocabSize})`);
    await expect(runner.encodeSlices([{ width: 20, height: 28, rgb: new Uint8Array(20 * 28 * 3) }])).rejects.toThrow(
      "slices[0]: width and height must be multiples of 14, got 20x28",
    );
    await runner.dispose();
  });
});

describe("weight formats and execution providers", () => {
  const cfg = smallShape({ hidden: 128, heads: 4, kvHeads: 2, resamplerHeads: 1, vocab: 1000 });
  const src = randomWeights(cfg, 11);
  const toks = Array.from({ length: 40 }, (_, i) => (i * 13) % 1000);
  const ref = referenceLlm(cfg, src.map, toks, [], [39])[0] as Float64Array;
  const argmax = (x: ArrayLike<number>) => {
    let b = 0;
    for (let i = 1; i < x.length; i++) if ((x[i] as number) > (x[b] as number)) b = i;
    return b;
  };

  it.each([
    ["f16", 0.05, 0.99999],
    ["int4", 4, 0.95],
  ] as const)("%s weights stay close to the f32 reference", async (weights, tol, minCos) => {
    const r = await createRunnerFromWeights(src, { cacheDir, modelName: "fmt", numBlocks: 16, weights });
    const [l] = await r.step([{ tokenIds: toks, pastLen: 0, blockTable: [3, 4, 5], wantLogits: true }]);
    await r.dispose();
    const got = l as Float32Array;
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let i = 0; i < ref.length; i++) {
      dot += (ref[i] as number) * (got[i] as number);
      na += (ref[i] as number) ** 2;
      nb += (got[i] as number) ** 2;
    }
    expect(maxDiff(got, ref)).toBeLessThan(tol);
    expect(dot / Math.sqrt(na * nb)).toBeGreaterThan(minCos);
    expect(argmax(got)).toBe(argmax(ref));
  });

  it("fails at start with a clear message when the execution provider is unavailable", async () => {
    await expect(
      createRunnerFromWeights(src, { cacheDir, modelName: "ep", numBlocks: 4, executionProvider: "cuda" }),
    ).rejects.toThrow(/executionProvider "cuda" is not available on this machine/);
  });
});
