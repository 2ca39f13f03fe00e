/**
 * KV cache sizing from a memory fraction, vLLM's `--gpu-memory-utilization` idea: the process may use
 * `fraction` of the memory it has (weights, runtime buffers and the KV pools together); the KV pools get what
 * is left once the model is loaded.
 *
 *   limit    = the container's memory limit (cgroup v2 memory.max, v1 memory.limit_in_bytes), else the
 *              machine's RAM
 *   used     = this process's resident memory after the graphs are open (weights included)
 *   kv bytes = fraction * limit - used
 *
 * NOTE: the KV pools are host memory (JS-owned Float32Arrays fed to ONNX Runtime in place) on every
 * execution provider, so the budget is the host's, not the GPU's.
 */
import { readFileSync } from "node:fs";
import { totalmem } from "node:os";

/** Memory this process may use: the cgroup limit when one is set, else total RAM. */
export function memoryLimitBytes(read: (path: string) => string | null = readOrNull): number {
  const total = totalmem();
  for (const path of ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]) {
    const raw = read(path)?.trim();
    if (!raw || raw === "max") continue;
    const v = Number(raw);
    // cgroup v1 reports "no limit" as a huge number.
    if (Number.isFinite(v) && v > 0 && v < total) return v;
  }
  return total;
}

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/**
 * KV pool bytes for `fraction` of `limitBytes` with `usedBytes` already in use. Throws naming the setting
 * when nothing is left for even one block of `blockBytes`.
 */
export function kvBytesFromFraction(opts: {
  fraction: number;
  limitBytes: number;
  usedBytes: number;
  blockBytes: number;
  setting?: string;
}): number {
  const { fraction, limitBytes, usedBytes, blockBytes } = opts;
  const setting = opts.setting ?? "KV_CACHE_MEMORY_FRACTION";
  if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`${setting} must be in (0, 1], got ${fraction}`);
  const budget = Math.floor(fraction * limitBytes - usedBytes);
  if (budget < blockBytes) {
    const gib = (b: number) => (b / 2 ** 30).toFixed(2);
    throw new RangeError(
      `${setting}=${fraction} leaves no room for the KV cache: ${fraction} x ${gib(limitBytes)} GiB limit - ` +
        `${gib(usedBytes)} GiB in use after loading the model = ${gib(Math.max(0, budget))} GiB, less than one ` +
        `${blockBytes}-byte block; raise it, or set KV_CACHE_BYTES / KV_NUM_BLOCKS`,
    );
  }
  return budget;
}
