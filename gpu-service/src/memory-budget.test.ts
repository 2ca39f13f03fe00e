import { describe, expect, it } from "vitest";
import { kvBytesFromFraction, memoryLimitBytes } from "./memory-budget";

describe("KV sizing from a memory fraction", () => {
  it("gives the KV pools fraction x limit minus what the loaded model uses", () => {
    const GiB = 2 ** 30;
    expect(kvBytesFromFraction({ fraction: 0.9, limitBytes: 40 * GiB, usedBytes: 20 * GiB, blockBytes: 1 << 20 })).toBe(
      16 * GiB,
    );
  });

  it("refuses a fraction that leaves less than one block, naming the setting", () => {
    expect(() =>
      kvBytesFromFraction({
        fraction: 0.5,
        limitBytes: 100,
        usedBytes: 60,
        blockBytes: 1,
        setting: "GPU_MEMORY_UTILIZATION",
      }),
    ).toThrow(/GPU_MEMORY_UTILIZATION=0.5 leaves no room for the KV cache/);
    expect(() => kvBytesFromFraction({ fraction: 1.5, limitBytes: 100, usedBytes: 0, blockBytes: 1 })).toThrow(
      /KV_CACHE_MEMORY_FRACTION must be in \(0, 1\]/,
    );
  });

  it("reads the cgroup limit (v2, then v1) and falls back to the machine's RAM", () => {
    const files: Record<string, string> = { "/sys/fs/cgroup/memory.max": "max\n" };
    const read = (p: string) => files[p] ?? null;
    const ram = memoryLimitBytes(() => null);
    expect(ram).toBeGreaterThan(0);
    expect(memoryLimitBytes(read)).toBe(ram);
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = "9223372036854771712";
    expect(memoryLimitBytes(read)).toBe(ram);
    files["/sys/fs/cgroup/memory.max"] = "1073741824\n";
    expect(memoryLimitBytes(read)).toBe(2 ** 30);
  });
});
