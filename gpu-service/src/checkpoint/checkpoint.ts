/**
 * Loading a MiniCPM-V 2.6 checkpoint directory in the Hugging Face layout: `config.json`,
 * `preprocessor_config.json`, one `model.safetensors` or shards listed by `model.safetensors.index.json`.
 * Everything is validated up front; tensors are read later, on demand, with positioned reads.
 */

import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { type Dtype, isSupportedDtype, widenToF32 } from "./dtype";
import { expectedTensors } from "./expected-tensors";
import { fileDigest } from "./file-hash";
import { type ModelConfig, parseModelConfig } from "./model-config";
import {
  IO_CHUNK_BYTES,
  openSafetensors,
  readExactly,
  type SafetensorsEntry,
  type SafetensorsHeader,
} from "./safetensors";

/** A loaded, validated checkpoint. Holds open file handles until `close()`. */
export interface Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  /**
   * sha256 over config.json, preprocessor_config.json and every safetensors file's name and whole-content
   * sha256: the graph-cache key (two checkpoints that differ only in their weights get different keys).
   */
  readonly contentHash: string;
  /** Names of the expected tensors, in module order. */
  tensorNames(): string[];
  tensorInfo(name: string): { dtype: Dtype; shape: number[] };
  /** The tensor widened to float32 (read in chunks of at most 64 MiB). */
  readTensor(name: string): Promise<Float32Array>;
  /** The tensor's raw little-endian bytes exactly as stored. */
  readTensorBytes(name: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

const INDEX_FILE = "model.safetensors.index.json";
const SINGLE_FILE = "model.safetensors";

async function readJson(
  path: string,
  required: boolean,
): Promise<{ json: Record<string, unknown>; bytes: Buffer } | null> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`${path}: cannot read (${(err as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw new Error(`${path}: invalid JSON (${(err as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new Error(`${path}: must be a JSON object`);
  return { json: json as Record<string, unknown>, bytes };
}

/** Which file holds each tensor: from the shard index, or the single file. */
async function resolveShards(dir: string): Promise<{ files: string[]; weightMap: Map<string, string> | null }> {
  const indexPath = join(dir, INDEX_FILE);
  const index = await readJson(indexPath, false);
  if (!index) return { files: [SINGLE_FILE], weightMap: null };
  const wm = index.json.weight_map;
  if (typeof wm !== "object" || wm === null || Array.isArray(wm))
    throw new Error(`${indexPath}: weight_map must be an object`);
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(wm)) {
    if (typeof file !== "string" || file.includes("/") || file.includes("\\") || !file.endsWith(".safetensors")) {
      throw new Error(`${indexPath}: weight_map[${name}] must be a .safetensors file name in the same directory`);
    }
    weightMap.set(name, file);
  }
  return { files: [...new Set(weightMap.values())].sort(), weightMap };
}

/**
 * Loads and validates a checkpoint: config keys, every expected tensor present in the file the
 * index names, with the expected shape and a supported dtype, and every data range inside its file.
 * Errors name the file and the tensor.
 * @param opts.hashMemo JSON file remembering each safetensors file's digest by path, size, mtime and inode,
 *   so a restart does not reread the weights to compute `contentHash`; without it every load reads them all.
 */
export async function loadCheckpoint(
  dir: string,
  opts: {
    hashMemo?: string;
    /** Validation progress: bytes of the safetensors files checked so far, of `total`. */
    onProgress?: (done: number, total: number) => void;
  } = {},
): Promise<Checkpoint> {
  const configPath = join(dir, "config.json");
  const preprocessorPath = join(dir, "preprocessor_config.json");
  const config = await readJson(configPath, true);
  const preprocessor = await readJson(preprocessorPath, false);
  const cfg = parseModelConfig(
    (config as { json: Record<string, unknown> }).json,
    preprocessor?.json ?? null,
    { config: configPath, preprocessor: preprocessorPath },
    basename(dir),
  );

  const { files, weightMap } = await resolveShards(dir);
  const opened: { file: string; fh: Awaited<ReturnType<typeof openSafetensors>>["fh"]; header: SafetensorsHeader }[] =
    [];
  const closeAll = () => Promise.all(opened.map((o) => o.fh.close().catch(() => {})));
  try {
    for (const file of files) {
      const path = join(dir, file);
      const { fh, header } = await openSafetensors(path);
      opened.push({ file, fh, header });
    }
    const byFile = new Map(opened.map((o) => [o.file, o]));
    const located = new Map<string, { entry: SafetensorsEntry; open: (typeof opened)[number]; dtype: Dtype }>();
    for (const { name, shape } of expectedTensors(cfg)) {
      const file = weightMap ? weightMap.get(name) : SINGLE_FILE;
      if (!file) throw new Error(`${join(dir, INDEX_FILE)}: tensor ${name} is missing from weight_map`);
      const o = byFile.get(file) as (typeof opened)[number];
      const entry = o.header.tensors.get(name);
      if (!entry) throw new Error(`${o.header.path}: tensor ${name} is missing`);
      if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
        throw new Error(`${o.header.path}: tensor ${name} has shape [${entry.shape}] but the config needs [${shape}]`);
      }
      if (!isSupportedDtype(entry.dtype)) {
        throw new Error(`${o.header.path}: tensor ${name} has unsupported dtype ${entry.dtype} (BF16, F16 or F32)`);
      }
      located.set(name, { entry, open: o, dtype: entry.dtype });
    }

    const hash = createHash("sha256");
    let hashed = 0;
    const sizes = await Promise.all(opened.map(async (o) => (await o.fh.stat()).size));
    const totalBytes = sizes.reduce((a, b) => a + b, 0);
    const onBytes = opts.onProgress
      ? (n: number) => {
          hashed += n;
          opts.onProgress?.(hashed, totalBytes);
        }
      : undefined;
    opts.onProgress?.(0, totalBytes);
    hash.update((config as { bytes: Buffer }).bytes);
    hash.update(preprocessor?.bytes ?? Buffer.alloc(0));
    for (const o of opened) {
      hash.update(o.file);
      hash.update(await fileDigest(o.fh, o.header.path, opts.hashMemo, onBytes));
    }
    const contentHash = hash.digest("hex");
    let closed = false;

    const find = (name: string) => {
      if (closed) throw new Error(`${dir}: checkpoint is closed`);
      const t = located.get(name);
      if (!t) throw new Error(`${dir}: no tensor ${name} in this architecture`);
      return t;
    };

    return {
      dir,
      config: cfg,
      contentHash,
      tensorNames: () => [...located.keys()],
      tensorInfo(name) {
        const t = find(name);
        return { dtype: t.dtype, shape: [...t.entry.shape] };
      },
      async readTensorBytes(name) {
        const t = find(name);
        return readExactly(t.open.fh, t.open.header.path, t.entry.start, t.entry.byteLength);
      },
      async readTensor(name) {
        const t = find(name);
        const elemBytes = t.dtype === "F32" ? 4 : 2;
        const count = t.entry.byteLength / elemBytes;
        const out = new Float32Array(count);
        // Chunks stay aligned to whole elements and well under the 2 GiB limit of one read.
        const perChunk = Math.floor(IO_CHUNK_BYTES / elemBytes);
        for (let first = 0; first < count; first += perChunk) {
          const n = Math.min(perChunk, count - first);
          const bytes = await readExactly(
            t.open.fh,
            t.open.header.path,
            t.entry.start + first * elemBytes,
            n * elemBytes,
          );
          widenToF32(t.dtype, bytes, out, first, n);
        }
        return out;
      },
      async close() {
        if (closed) return;
        closed = true;
        await closeAll();
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
