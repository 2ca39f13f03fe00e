import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { formatBytes, fromHubProgress, ProgressReporter } from "./progress";

describe("ProgressReporter", () => {
  it("off a TTY: one structured line at the start and the end of a task, at most one per interval between", () => {
    const lines: Record<string, unknown>[] = [];
    const p = new ProgressReporter({
      tty: false,
      logEveryMs: 60_000,
      logger: { info: (o, msg) => lines.push({ msg, ...o }) },
    });
    const u = { id: "phase:build", label: "graph build", unit: "bytes" as const, total: 200 };
    p.update({ ...u, done: 0 });
    p.update({ ...u, done: 50 });
    p.update({ ...u, done: 100 });
    expect(p.active()).toEqual([
      { label: "graph build", done: 100, total: 200, unit: "bytes", percent: 50, finished: false },
    ]);
    p.update({ ...u, done: 200, finished: true, note: "built" });
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ msg: "progress", task: "graph build", done: 0, total: 200, percent: 0 });
    expect(lines[1]).toMatchObject({ task: "graph build", done: 200, percent: 100, finished: true, note: "built" });
    expect(p.active()).toEqual([]);
  });

  it("on a TTY: a bar with the amounts and the outcome", () => {
    const out = new PassThrough();
    let text = "";
    out.on("data", (d: Buffer) => {
      text += d.toString();
    });
    Object.assign(out, { isTTY: true, columns: 160 });
    const p = new ProgressReporter({ tty: true, stream: out });
    p.update({ id: "d", label: "download model.safetensors", unit: "bytes", done: 512, total: 2048 });
    p.update({ id: "d", label: "download model.safetensors", unit: "bytes", done: 2048, total: 2048, finished: true });
    p.stop();
    expect(text).toContain("download model.safetensors");
    expect(text).toContain("100% | 2.0 KiB/2.0 KiB");
  });

  it("turns Hub download events into per-file byte updates", () => {
    expect(fromHubProgress({ event: "plan", repo: "o/r", commit: "c", files: [] })).toBeNull();
    expect(fromHubProgress({ event: "progress", file: "a.safetensors", bytes: 10, total: 40 })).toEqual({
      id: "download:a.safetensors",
      label: "download a.safetensors",
      unit: "bytes",
      done: 10,
      total: 40,
    });
    expect(fromHubProgress({ event: "skipped", file: "a", bytes: 4, total: 4 })).toMatchObject({
      finished: true,
      note: "in cache",
    });
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(12)).toBe("12 B");
  });
});
