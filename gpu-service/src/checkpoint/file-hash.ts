/**
 * Whole-file sha256 of checkpoint files, remembered across restarts.
 *
 * The graph cache is keyed by the checkpoint's content; two checkpoints of the same architecture (another
 * seed, a fine-tune) have identical configs and safetensors headers and differ only in their data, so the
 * data must be hashed. Reading 16 GB takes a while, so the digest is remembered in a small JSON file keyed by
 * the file's real path, size, mtime and inode: an unchanged file is not read again, a rewritten one is.
 */

import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { IO_CHUNK_BYTES } from "./safetensors";

interface MemoEntry {
  size: number;
  mtimeMs: number;
  ino: number;
  sha256: string;
}

type Memo = Record<string, MemoEntry>;

function readMemo(memoPath: string): Memo {
  try {
    const m = JSON.parse(readFileSync(memoPath, "utf8")) as unknown;
    return typeof m === "object" && m !== null && !Array.isArray(m) ? (m as Memo) : {};
  } catch {
    return {}; // absent or unreadable: hash again
  }
}

/** sha256 of every byte of the open file, streamed in chunks of at most 64 MiB. */
export async function sha256OfFile(fh: FileHandle, path: string, onBytes?: (n: number) => void): Promise<string> {
  const size = (await fh.stat()).size;
  const hash = createHash("sha256");
  const buf = new Uint8Array(Math.min(IO_CHUNK_BYTES, Math.max(1, size)));
  for (let pos = 0; pos < size; ) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
    if (bytesRead === 0) throw new Error(`${path}: unexpected end of file at byte ${pos}`);
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
    onBytes?.(bytesRead);
  }
  return hash.digest("hex");
}

/**
 * sha256 of the file at `path` (open as `fh`); with `memoPath`, reuses the digest remembered for the same
 * real path, size, mtime and inode, and remembers a new one (best effort: a read-only cache only costs time).
 * `onBytes` hears of each chunk hashed (a remembered file counts as hashed at once).
 */
export async function fileDigest(
  fh: FileHandle,
  path: string,
  memoPath?: string,
  onBytes?: (n: number) => void,
): Promise<string> {
  if (!memoPath) return sha256OfFile(fh, path, onBytes);
  const st = statSync(path);
  const key = realpathSync(path);
  const memo = readMemo(memoPath);
  const hit = memo[key];
  if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.ino === st.ino) {
    onBytes?.(st.size);
    return hit.sha256;
  }
  const sha256 = await sha256OfFile(fh, path, onBytes);
  try {
    mkdirSync(dirname(memoPath), { recursive: true });
    // Re-read so entries another process added meanwhile are kept; rename makes the write atomic.
    const latest = readMemo(memoPath);
    latest[key] = { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha256 };
    const tmp = `${memoPath}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(latest, null, 1));
    renameSync(tmp, memoPath);
  } catch {
    // NOTE: an unwritable cache directory is not an error; the next start hashes the file again.
  }
  return sha256;
}
