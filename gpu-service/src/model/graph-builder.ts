import { closeSync, openSync, writeSync } from "node:fs";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  type GraphProto,
  GraphProtoSchema,
  ModelProtoSchema,
  type NodeProto,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  type TensorProto,
  TensorProto_DataLocation,
  TensorProto_DataType,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  type ValueInfoProto,
  ValueInfoProtoSchema,
} from "@minicpmv/proto/onnx";

/** Element types the builder emits. */
export type DType = "float32" | "float16" | "int64" | "int32" | "uint8" | "int8" | "bool";
/** A tensor dimension: a fixed size or a symbolic name. */
export type Dim = number | string;
/** Attribute values: plain numbers are INT, `{ f }` is FLOAT, `{ fs }` FLOATS, number[] INTS, Graph a subgraph. */
export type AttrValue = number | number[] | string | { f: number } | { fs: number[] } | Graph;

const DTYPE_CODE: Record<DType, number> = {
  float32: TensorProto_DataType.FLOAT,
  float16: TensorProto_DataType.FLOAT16,
  int64: TensorProto_DataType.INT64,
  int32: TensorProto_DataType.INT32,
  uint8: TensorProto_DataType.UINT8,
  int8: TensorProto_DataType.INT8,
  bool: TensorProto_DataType.BOOL,
};

/** ONNX TensorProto.DataType code of a builder dtype (for Cast's `to`). */
export function onnxType(t: DType): number {
  return DTYPE_CODE[t];
}

type TypedData = Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array | Int8Array;

/** Tensors larger than this go to the external data file (when one is configured). */
const EXTERNAL_MIN_BYTES = 1024;
/** Alignment of external tensors, so ORT can map them page by page. */
const EXTERNAL_ALIGN = 4096;

/** Appends initializer bytes to one external-data file; tracks offsets. */
class ExternalWriter {
  private fd: number;
  private offset = 0;
  constructor(
    readonly path: string,
    readonly location: string,
  ) {
    this.fd = openSync(path, "w");
  }
  write(bytes: Uint8Array): { offset: number; length: number } {
    const pad = (EXTERNAL_ALIGN - (this.offset % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
    if (pad > 0) {
      writeSync(this.fd, new Uint8Array(pad));
      this.offset += pad;
    }
    const at = this.offset;
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(this.fd, bytes, done, bytes.byteLength - done);
    this.offset += bytes.byteLength;
    return { offset: at, length: bytes.byteLength };
  }
  close(): void {
    closeSync(this.fd);
  }
}

/** Shared state of one model: unique value names and the external data sink. */
class ModelState {
  private counter = 0;
  constructor(readonly external: ExternalWriter | null) {}
  fresh(prefix: string): string {
    this.counter++;
    return `${prefix}_${this.counter}`;
  }
}

/**
 * One ONNX graph (the main graph or a Loop body). Values are named strings; `op` appends a node and
 * returns its output name(s). Small constants are deduplicated.
 */
export class Graph {
  private readonly nodes: NodeProto[] = [];
  private readonly inits: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly constCache = new Map<string, string>();

  /** @internal use ModelBuilder.graph / ModelBuilder.subgraph */
  constructor(
    readonly name: string,
    private readonly state: ModelState,
  ) {}

  /** Declares a graph input. */
  input(name: string, dtype: DType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, dtype, dims));
    return name;
  }

  /** Declares a graph output; `value` is renamed to `name` through an Identity when they differ. */
  output(value: string, name: string = value, dtype: DType = "float32", dims?: Dim[]): string {
    const out = value === name ? value : this.op("Identity", [value], {}, { out: name });
    this.outputs.push(valueInfo(out, dtype, dims));
    return out;
  }

  /** Adds an initializer (external when large and the model has an external data file). */
  init(name: string, dtype: DType, dims: number[], data: TypedData): string {
    const t = create(TensorProtoSchema, { name, dataType: DTYPE_CODE[dtype], dims: dims.map(BigInt) });
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const ext = this.state.external;
    if (ext && bytes.byteLength >= EXTERNAL_MIN_BYTES) {
      const { offset, length } = ext.write(bytes);
      t.dataLocation = TensorProto_DataLocation.EXTERNAL;
      t.externalData = [
        create(StringStringEntryProtoSchema, { key: "location", value: ext.location }),
        create(StringStringEntryProtoSchema, { key: "offset", value: String(offset) }),
        create(StringStringEntryProtoSchema, { key: "length", value: String(length) }),
      ];
    } else {
      t.rawData = new Uint8Array(bytes) as Uint8Array<ArrayBuffer>;
    }
    this.inits.push(t);
    return name;
  }

  /** An int64 constant ([] dims for a scalar when `scalar`). */
  i64(values: number | number[]): string {
    const scalar = !Array.isArray(values);
    const arr = scalar ? [values] : values;
    return this.cached(`i64:${scalar}:${arr.join(",")}`, (name) =>
      this.init(name, "int64", scalar ? [] : [arr.length], BigInt64Array.from(arr.map(BigInt))),
    );
  }

  /** A float32 constant ([] dims for a scalar). */
  f32(values: number | number[]): string {
    const scalar = !Array.isArray(values);
    const arr = scalar ? [values] : values;
    return this.cached(`f32:${scalar}:${arr.join(",")}`, (name) =>
      this.init(name, "float32", scalar ? [] : [arr.length], Float32Array.from(arr)),
    );
  }

  private cached(key: string, make: (name: string) => string): string {
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = make(this.state.fresh(`${this.name}_const`));
    this.constCache.set(key, name);
    return name;
  }

  /** Appends a node with one output and returns its name. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: OpOptions = {}): string {
    return this.opN(opType, inputs, 1, attrs, opts)[0] as string;
  }

  /** Appends a node with `n` outputs and returns their names. */
  opN(opType: string, inputs: string[], n: number, attrs: Record<string, AttrValue> = {}, opts: OpOptions = {}) {
    const base = opts.out ?? this.state.fresh(opType);
    const outs = Array.from({ length: n }, (_, i) => (i === 0 ? base : `${base}_${i}`));
    this.nodes.push(
      create(NodeProtoSchema, {
        name: this.state.fresh(`n_${opType}`),
        opType,
        domain: opts.domain ?? "",
        input: inputs,
        output: outs,
        attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      }),
    );
    return outs;
  }

  /** The GraphProto of this graph. */
  toProto(): GraphProto {
    return create(GraphProtoSchema, {
      name: this.name,
      node: this.nodes,
      initializer: this.inits,
      input: this.inputs,
      output: this.outputs,
    });
  }
}

export interface OpOptions {
  /** Operator domain ("" = ai.onnx, "com.microsoft"). */
  domain?: string;
  /** Name of the (first) output. */
  out?: string;
}

function valueInfo(name: string, dtype: DType, dims?: Dim[]): ValueInfoProto {
  const tensorType = create(TypeProto_TensorSchema, { elemType: DTYPE_CODE[dtype] });
  if (dims)
    tensorType.shape = create(TensorShapeProtoSchema, {
      dim: dims.map((d) =>
        create(TensorShapeProto_DimensionSchema, {
          value: typeof d === "number" ? { case: "dimValue", value: BigInt(d) } : { case: "dimParam", value: d },
        }),
      ),
    });
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, { value: { case: "tensorType", value: tensorType } }),
  });
}

function attribute(name: string, v: AttrValue) {
  const a = create(AttributeProtoSchema, { name });
  if (typeof v === "number") {
    a.type = AttributeProto_AttributeType.INT;
    a.i = BigInt(v);
  } else if (typeof v === "string") {
    a.type = AttributeProto_AttributeType.STRING;
    a.s = new TextEncoder().encode(v) as Uint8Array<ArrayBuffer>;
  } else if (Array.isArray(v)) {
    a.type = AttributeProto_AttributeType.INTS;
    a.ints = v.map(BigInt);
  } else if (v instanceof Graph) {
    a.type = AttributeProto_AttributeType.GRAPH;
    a.g = v.toProto();
  } else if ("f" in v) {
    a.type = AttributeProto_AttributeType.FLOAT;
    a.f = v.f;
  } else {
    a.type = AttributeProto_AttributeType.FLOATS;
    a.floats = v.fs;
  }
  return a;
}

export interface ModelBuilderOptions {
  /** Write large initializers to this file (absolute path); its base name is recorded as the location. */
  externalDataPath?: string;
  /** Stored as model metadata_props (e.g. the graph's I/O names and shapes). */
  metadata?: Record<string, string>;
}

/** Builds one ONNX model (opset 23 + com.microsoft 1), optionally with external weight data. */
export class ModelBuilder {
  readonly graph: Graph;
  private readonly state: ModelState;
  private readonly metadata: Record<string, string>;

  constructor(name: string, opts: ModelBuilderOptions = {}) {
    const ext = opts.externalDataPath
      ? new ExternalWriter(opts.externalDataPath, opts.externalDataPath.split(/[\\/]/).pop() as string)
      : null;
    this.state = new ModelState(ext);
    this.graph = new Graph(name, this.state);
    this.metadata = opts.metadata ?? {};
  }

  /** A new subgraph (Loop/If body) sharing this model's name space and external data file. */
  subgraph(name: string): Graph {
    return new Graph(name, this.state);
  }

  /** Serialises the model; closes the external data file. NOTE: the protobuf itself must stay < 2 GiB. */
  finish(): Uint8Array {
    this.state.external?.close();
    const model = create(ModelProtoSchema, {
      irVersion: 10n,
      producerName: "minicpmv-gpu-service",
      opsetImport: [
        create(OperatorSetIdProtoSchema, { domain: "", version: 23n }),
        create(OperatorSetIdProtoSchema, { domain: "com.microsoft", version: 1n }),
      ],
      graph: this.graph.toProto(),
      metadataProps: Object.entries(this.metadata).map(([key, value]) =>
        create(StringStringEntryProtoSchema, { key, value }),
      ),
    });
    const bytes = toBinary(ModelProtoSchema, model);
    if (bytes.byteLength >= 2 ** 31) throw new Error(`ONNX protobuf is ${bytes.byteLength} bytes (limit 2 GiB)`);
    return bytes;
  }
}
