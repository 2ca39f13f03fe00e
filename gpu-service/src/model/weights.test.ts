import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { ModelBuilder } from "./graph-builder";
import { dequantizeInt4, INT4_BLOCK, quantizeInt4, toHalf, transpose } from "./weights";

describe("weight conversion", () => {
  it("rounds floats to IEEE half", () => {
    expect([1, -2, 0.5, 65504, 1e6, 2 ** -24, 2 ** -26, 1 + 2 ** -11, 1 + 3 * 2 ** -11].map(toHalf)).toEqual([
      0x3c00, 0xc000, 0x3800, 0x7bff, 0x7c00, 0x0001, 0x0000, 0x3c00, 0x3c02,
    ]);
  });

  it("transposes [rows, cols] into [cols, rows]", () => {
    expect(Array.from(transpose(Float32Array.from([1, 2, 3, 4, 5, 6]), 2, 3))).toEqual([1, 4, 2, 5, 3, 6]);
  });

  it("quantizes to int4 within half a step per block, zero-padding a ragged block", () => {
    const n = 3;
    const k = 70; // 3 blocks, the last one ragged
    const w = Float32Array.from({ length: n * k }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 5)));
    const q = quantizeInt4(w, n, k);
    expect(q.packed.length).toBe(n * 3 * (INT4_BLOCK / 2));
    expect(q.zeroPoints.length).toBe(n * 2);
    const back = dequantizeInt4(q);
    for (let i = 0; i < w.length; i++) {
      const scale = q.scales[Math.floor(i / k) * 3 + Math.floor((i % k) / INT4_BLOCK)] as number;
      expect(Math.abs((back[i] as number) - (w[i] as number))).toBeLessThanOrEqual(scale / 2 + 1e-6);
    }
  });

  it("packs exactly as com.microsoft MatMulNBits reads it", async () => {
    const n = 5;
    const k = 96;
    const w = Float32Array.from({ length: n * k }, (_, i) => Math.cos(i * 0.91) * 0.3);
    const q = quantizeInt4(w, n, k);
    const m = new ModelBuilder("nbits");
    const g = m.graph;
    g.input("x", "float32", [2, k]);
    const b = g.init("b", "uint8", [n, 3, 16], q.packed);
    const s = g.init("s", "float32", [n * 3], q.scales);
    const z = g.init("z", "uint8", [n * 2], q.zeroPoints);
    // accuracy_level 0: float compute, so the result must equal x · dequant(W)ᵀ
    g.output(
      g.op(
        "MatMulNBits",
        ["x", b, s, z],
        { K: k, N: n, bits: 4, block_size: 32, accuracy_level: 0 },
        { domain: "com.microsoft" },
      ),
      "y",
    );
    const session = await ort.InferenceSession.create(m.finish());
    const x = Float32Array.from({ length: 2 * k }, (_, i) => ((i * 7) % 11) / 5 - 1);
    const y = (await session.run({ x: new ort.Tensor("float32", x, [2, k]) })).y?.data as Float32Array;
    const deq = dequantizeInt4(q);
    for (let r = 0; r < 2; r++)
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let i = 0; i < k; i++) acc += (x[r * k + i] as number) * (deq[j * k + i] as number);
        expect(Math.abs((y[r * n + j] as number) - acc)).toBeLessThan(1e-4);
      }
    await session.release();
  });
});
