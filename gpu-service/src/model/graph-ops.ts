import type { Graph } from "./graph-builder";
import { INT4_BLOCK, quantizeInt4, toHalfArray, transpose, type WeightFormat, type WeightSource } from "./weights";

/** Builds graph pieces shared by the vision and LLM graphs, reading weights from one source. */
export class LayerFactory {
  constructor(
    readonly g: Graph,
    readonly src: WeightSource,
  ) {}

  /** A tensor as an f32 initializer under its checkpoint name. */
  async tensor(name: string, dims: number[]): Promise<string> {
    const data = await this.src.readTensor(name);
    const n = dims.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new Error(`${name}: expected ${dims.join("x")} = ${n} values, got ${data.length}`);
    return this.g.init(name, "float32", dims, data);
  }

  /**
   * y = x · Wᵀ (+ b) for a Linear weight W [n, k] stored as in PyTorch. f32 stores Wᵀ [k, n] for MatMul;
   * f16 stores Wᵀ in half and casts back (ORT folds the cast at load); int4 uses MatMulNBits.
   */
  async linear(x: string, weight: string, k: number, n: number, fmt: WeightFormat, bias?: string): Promise<string> {
    const w = await this.src.readTensor(weight);
    if (w.length !== n * k) throw new Error(`${weight}: expected ${n}x${k}, got ${w.length} values`);
    let y: string;
    if (fmt === "int4") {
      const q = quantizeInt4(w, n, k);
      const nb = Math.ceil(k / INT4_BLOCK);
      const packed = this.g.init(`${weight}.q4`, "uint8", [n, nb, INT4_BLOCK / 2], q.packed);
      const scales = this.g.init(`${weight}.scales`, "float32", [n * nb], q.scales);
      const zp = this.g.init(`${weight}.zp`, "uint8", [n * Math.ceil(nb / 2)], q.zeroPoints);
      y = this.g.op(
        "MatMulNBits",
        [x, packed, scales, zp],
        { K: k, N: n, bits: 4, block_size: INT4_BLOCK, accuracy_level: 4 },
        { domain: "com.microsoft" },
      );
    } else if (fmt === "f16") {
      const wt = this.g.init(`${weight}.T.f16`, "float16", [k, n], toHalfArray(transpose(w, n, k)));
      y = this.g.op("MatMul", [x, this.g.op("Cast", [wt], { to: 1 })]);
    } else {
      const wt = this.g.init(`${weight}.T`, "float32", [k, n], transpose(w, n, k));
      y = this.g.op("MatMul", [x, wt]);
    }
    if (bias === undefined) return y;
    return this.g.op("Add", [y, await this.tensor(bias, [n])]);
  }

  /** LayerNorm over the last axis with weight and bias `<prefix>.weight/.bias`. */
  async layerNorm(x: string, prefix: string, dim: number, eps: number): Promise<string> {
    const w = await this.tensor(`${prefix}.weight`, [dim]);
    const b = await this.tensor(`${prefix}.bias`, [dim]);
    return this.g.op("LayerNormalization", [x, w, b], { axis: -1, epsilon: { f: eps } });
  }

  /** RMSNorm over the last axis (Qwen2: fp32, x·rsqrt(mean(x²)+eps)·w). */
  async rmsNorm(x: string, weight: string, dim: number, eps: number): Promise<string> {
    const w = await this.tensor(weight, [dim]);
    return this.g.op("RMSNormalization", [x, w], { axis: -1, epsilon: { f: eps } });
  }

  /** Reshapes to a constant shape (0 copies a dim, -1 infers one). */
  reshape(x: string, shape: number[]): string {
    return this.g.op("Reshape", [x, this.g.i64(shape)]);
  }

  transpose(x: string, perm: number[]): string {
    return this.g.op("Transpose", [x], { perm });
  }
}
