/**
 * safetensors files: header parsing with full validation, positioned tensor reads, and a streaming writer.
 *
 * ```
 * [u64 LE N][N bytes JSON header, space padded][data: tensors back to back, offsets relative to here]
 * ```
 */

import { type FileHandle, open } from "node:fs/promises";
import { type Dtype, encodeF32, SAFETENSORS_DTYPE_BYTES } from "./dtype";

/** Largest header we accept (the safetensors reference implementation uses the same 100 MB cap). */
const MAX_HEADER_BYTES = 100_000_000;
/** Largest single read or write; far below the 2 GiB limit of one fs call. */
export const IO_CHUNK_BYTES = 64 * 1024 * 1024;

/** One tensor entry of a safetensors header, with absolute file offsets. */
export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the first element in the file. */
  start: number;
  /** Byte length of the data. */
  byteLength: number;
}

/** A parsed safetensors header. */
export interface SafetensorsHeader {
  path: string;
  fileSize: number;
  /** The header bytes as stored (length prefix + JSON), for content hashing. */
  headerBytes: Uint8Array;
  metadata: Record<string, string>;
  tensors: Map<string, SafetensorsEntry>;
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/** Reads exactly `length` bytes at `position` (in chunks of at most IO_CHUNK_BYTES). */
export async function readExactly(fh: FileHandle, path: string, position: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = Math.min(IO_CHUNK_BYTES, length - done);
    const { bytesRead } = await fh.read(out, done, n, position + done);
    if (bytesRead === 0) throw new Error(`${path}: unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
  return out;
}

/**
 * Reads and validates the header of an open safetensors file: length prefix inside the file,
 * JSON object, every entry with a known dtype, integer shape and offsets whose length matches the
 * shape, data inside the file and no two tensors overlapping.
 */
export async function readSafetensorsHeader(fh: FileHandle, path: string): Promise<SafetensorsHeader> {
  const fileSize = (await fh.stat()).size;
  if (fileSize < 8) throw new Error(`${path}: file is ${fileSize} bytes, too short for a safetensors header`);
  const prefix = await readExactly(fh, path, 0, 8);
  const n = Number(new DataView(prefix.buffer).getBigUint64(0, true));
  if (n > MAX_HEADER_BYTES)
    throw new Error(`${path}: header length ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  if (8 + n > fileSize)
    throw new Error(`${path}: header length ${n} runs past the end of the file (${fileSize} bytes)`);
  const jsonBytes = await readExactly(fh, path, 8, n);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(jsonBytes));
  } catch (err) {
    throw new Error(`${path}: header is not valid JSON (${(err as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new Error(`${path}: header must be a JSON object`);
  }
  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null) throw new Error(`${path}: __metadata__ must be an object`);
      metadata = raw as Record<string, string>;
      continue;
    }
    const where = `${path}: tensor ${name}`;
    if (typeof raw !== "object" || raw === null) throw new Error(`${where}: entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== "string") throw new Error(`${where}: dtype must be a string`);
    const elemBytes = SAFETENSORS_DTYPE_BYTES[dtype];
    if (elemBytes === undefined) throw new Error(`${where}: unknown dtype ${dtype}`);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw new Error(`${where}: shape must be an array of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw new Error(`${where}: data_offsets must be [begin, end] non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    const expected = shape.reduce((a: number, b: number) => a * b, 1) * elemBytes;
    if (end < begin || end - begin !== expected) {
      throw new Error(`${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes, shape needs ${expected}`);
    }
    if (end > dataSize) {
      throw new Error(
        `${where}: data ends at byte ${dataStart + end} but the file has only ${fileSize} bytes (truncated or corrupt)`,
      );
    }
    tensors.set(name, { name, dtype, shape: shape as number[], start: dataStart + begin, byteLength: end - begin });
  }
  const sorted = [...tensors.values()].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1] as SafetensorsEntry;
    const cur = sorted[i] as SafetensorsEntry;
    if (cur.start < prev.start + prev.byteLength) {
      throw new Error(`${path}: tensors ${prev.name} and ${cur.name} overlap`);
    }
  }
  const headerBytes = new Uint8Array(8 + n);
  headerBytes.set(prefix, 0);
  headerBytes.set(jsonBytes, 8);
  return { path, fileSize, headerBytes, metadata, tensors };
}

/** Opens a file and reads its header; closes the file again if the header is bad. */
export async function openSafetensors(path: string): Promise<{ fh: FileHandle; header: SafetensorsHeader }> {
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (err) {
    throw new Error(`${path}: cannot open (${(err as Error).message})`);
  }
  try {
    return { fh, header: await readSafetensorsHeader(fh, path) };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** Name, dtype and shape of one tensor to be written. */
export interface TensorSpec {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const DTYPE_BYTES: Record<Dtype, number> = { BF16: 2, F16: 2, F32: 4 };

/**
 * Builds a header in the layout of the reference writer: `__metadata__` first, then tensors in
 * sorted-name order, compact JSON, space padded to a multiple of 8. Returns the tensors in data order.
 */
export function buildHeader(
  specs: readonly TensorSpec[],
  metadata: Record<string, string> = { format: "pt" },
): { bytes: Uint8Array; order: TensorSpec[]; dataBytes: number } {
  const order = [...specs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const s of order) {
    if (header[s.name] !== undefined) throw new Error(`duplicate tensor name ${s.name}`);
    const len = numel(s.shape) * DTYPE_BYTES[s.dtype];
    header[s.name] = { dtype: s.dtype, shape: [...s.shape], data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = JSON.stringify(header);
  const jsonLen = Buffer.byteLength(json);
  json += " ".repeat((8 - (jsonLen % 8)) % 8);
  const body = Buffer.from(json);
  const bytes = new Uint8Array(8 + body.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(body.length), true);
  bytes.set(body, 8);
  return { bytes, order, dataBytes: offset };
}

/**
 * Streams a safetensors file to disk: the header first, then each tensor's bytes in `order`,
 * supplied chunk by chunk by `write`. Checks that every tensor gets exactly its byte length.
 */
export class SafetensorsWriter {
  private current = 0;
  private written = 0;
  readonly order: TensorSpec[];

  private constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    order: TensorSpec[],
    private position: number,
  ) {
    this.order = order;
    this.skipEmpty();
  }

  private skipEmpty(): void {
    while (this.order[this.current] && numel((this.order[this.current] as TensorSpec).shape) === 0) this.current++;
  }

  static async create(path: string, specs: readonly TensorSpec[]): Promise<SafetensorsWriter> {
    const { bytes, order } = buildHeader(specs);
    const fh = await open(path, "w");
    try {
      await fh.write(bytes, 0, bytes.length, 0);
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new SafetensorsWriter(fh, path, order, bytes.length);
  }

  /** Appends raw little-endian bytes of the current tensor (`order[i]` in turn). */
  async write(chunk: Uint8Array): Promise<void> {
    const spec = this.order[this.current];
    if (!spec) throw new Error(`${this.path}: write past the last tensor`);
    const total = numel(spec.shape) * DTYPE_BYTES[spec.dtype];
    if (this.written + chunk.length > total) throw new Error(`${this.path}: too many bytes for tensor ${spec.name}`);
    let done = 0;
    while (done < chunk.length) {
      const n = Math.min(IO_CHUNK_BYTES, chunk.length - done);
      const { bytesWritten } = await this.fh.write(chunk, done, n, this.position);
      done += bytesWritten;
      this.position += bytesWritten;
    }
    this.written += chunk.length;
    if (this.written === total) {
      this.current++;
      this.written = 0;
      this.skipEmpty();
    }
  }

  /** Closes the file; throws if some tensor did not get all its bytes. */
  async close(): Promise<void> {
    await this.fh.close();
    if (this.current < this.order.length) {
      throw new Error(`${this.path}: tensor ${(this.order[this.current] as TensorSpec).name} was not fully written`);
    }
  }

  /** Closes the file without checks (error paths). */
  async abort(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/** Writes small in-memory tensors (values as float32, rounded to `dtype`) into one safetensors file. */
export async function writeSafetensors(
  path: string,
  tensors: readonly (TensorSpec & { data: Float32Array })[],
): Promise<void> {
  for (const t of tensors) {
    if (t.data.length !== numel(t.shape)) {
      throw new Error(`tensor ${t.name}: ${t.data.length} values for shape [${t.shape.join(", ")}]`);
    }
  }
  const writer = await SafetensorsWriter.create(path, tensors);
  try {
    const byName = new Map(tensors.map((t) => [t.name, t]));
    for (const spec of writer.order) {
      const t = byName.get(spec.name) as TensorSpec & { data: Float32Array };
      if (t.data.length > 0) await writer.write(encodeF32(t.dtype, t.data));
    }
  } catch (err) {
    await writer.abort();
    throw err;
  }
  await writer.close();
}
