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
    const b = bias === undefined ? undefined : await this.src.readTensor(bias);
    if (b !== undefined && b.length !== n) throw new Error(`${bias}: expected ${n} values, got ${b.length}`);
    return this.linearData(x, weight, w, k, n, fmt, b);
  }

  /**
   * Several Linear layers on the same input as one: y = x · [W1; W2; …]ᵀ + [b1 | b2 | …] (one MatMul or
   * MatMulNBits instead of one per layer; int4 blocks run along k, so each row quantizes as it would alone).
   */
  async linearConcat(
    x: string,
    name: string,
    weights: { weight: string; n: number; bias?: string }[],
    k: number,
    fmt: WeightFormat,
  ): Promise<string> {
    const N = weights.reduce((a, w) => a + w.n, 0);
    const w = new Float32Array(N * k);
    const hasBias = weights.some((p) => p.bias !== undefined);
    const b = hasBias ? new Float32Array(N) : undefined;
    let row = 0;
    for (const p of weights) {
      const part = await this.src.readTensor(p.weight);
      if (part.length !== p.n * k) throw new Error(`${p.weight}: expected ${p.n}x${k}, got ${part.length} values`);
      w.set(part, row * k);
      if (p.bias !== undefined && b) {
        const bb = await this.src.readTensor(p.bias);
        if (bb.length !== p.n) throw new Error(`${p.bias}: expected ${p.n} values, got ${bb.length}`);
        b.set(bb, row);
      }
      row += p.n;
    }
    return this.linearData(x, name, w, k, N, fmt, b);
  }

  private linearData(
    x: string,
    name: string,
    w: Float32Array,
    k: number,
    n: number,
    fmt: WeightFormat,
    bias?: Float32Array,
  ): string {
    const b = bias === undefined ? undefined : this.g.init(`${name}.bias`, "float32", [n], bias);
    if (fmt === "int4") {
      const q = quantizeInt4(w, n, k);
      const nb = Math.ceil(k / INT4_BLOCK);
      const packed = this.g.init(`${name}.q4`, "uint8", [n, nb, INT4_BLOCK / 2], q.packed);
      const scales = this.g.init(`${name}.scales`, "float32", [n * nb], q.scales);
      const zp = this.g.init(`${name}.zp`, "uint8", [n * Math.ceil(nb / 2)], q.zeroPoints);
      // NOTE: the bias goes into MatMulNBits itself (input 5), saving an Add per layer.
      return this.g.op(
        "MatMulNBits",
        b === undefined ? [x, packed, scales, zp] : [x, packed, scales, zp, "", b],
        { K: k, N: n, bits: 4, block_size: INT4_BLOCK, accuracy_level: 4 },
        { domain: "com.microsoft" },
      );
    }
    let y: string;
    if (fmt === "f16") {
      const wt = this.g.init(`${name}.T.f16`, "float16", [k, n], toHalfArray(transpose(w, n, k)));
      y = this.g.op("MatMul", [x, this.g.op("Cast", [wt], { to: 1 })]);
    } else {
      const wt = this.g.init(`${name}.T`, "float32", [k, n], transpose(w, n, k));
      y = this.g.op("MatMul", [x, wt]);
    }
    return b === undefined ? y : this.g.op("Add", [y, b]);
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
