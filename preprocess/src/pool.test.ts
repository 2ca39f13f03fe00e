import { createHash } from "node:crypto";
import sharp from "sharp";
import { afterAll, describe, expect, it } from "vitest";
import { contentHash } from "./media";
import { WorkerPool } from "./pool";
import { failure, goldenBytes } from "./testing/fixtures";

const LIMITS = { maxBytes: 1e8, maxPixels: 1e8, maxDimension: 20000 };

describe("WorkerPool", () => {
  const pool = new WorkerPool(1);
  afterAll(() => pool.close());

  it("slices in a worker thread, bit-exact with the golden slice", async () => {
    const out = await pool.run({
      kind: "encoded",
      bytes: goldenBytes("images/img_500x300.png"),
      maxSliceNums: 9,
      limits: LIMITS,
      field: "x",
    });
    expect([out.sourceWidth, out.sourceHeight, out.slices.length]).toEqual([500, 300, 1]);
    const slice = out.slices[0]?.data ?? new Uint8Array();
    expect(createHash("sha256").update(slice).digest("hex")).toBe(
      "bec3aa64df86bb636016ecdfa02fdb204717eb812bc9cb0f6dac17ce60d10536",
    );
    expect(out.contentHash).toEqual(contentHash(out.slices));
  });

  it("copies Buffer views before transferring them, leaving the rest of the parent buffer usable", async () => {
    const png = goldenBytes("images/img_097x131.png");
    // Two images inside one Buffer, as in a decoded gRPC request.
    const request = Buffer.concat([png, png]);
    const views = [request.subarray(0, png.length), request.subarray(png.length)];
    const out = await Promise.all(
      views.map((bytes, i) => pool.run({ kind: "encoded", bytes, maxSliceNums: 9, limits: LIMITS, field: `i${i}` })),
    );
    expect(out.map((o) => o.sourceWidth)).toEqual([97, 97]);
    expect(request.buffer.byteLength).toBeGreaterThan(0); // not detached
  });

  it("keeps error kinds across the thread boundary and survives them", async () => {
    const e = await failure(
      pool.run({ kind: "encoded", bytes: new Uint8Array(10).fill(1), maxSliceNums: 9, limits: LIMITS, field: "img" }),
    );
    expect([e.kind, e.message]).toEqual([
      "invalid_argument",
      "img: unsupported or unrecognised image format (accepted: JPEG, PNG, WebP, GIF, AVIF, TIFF)",
    ]);
    const ok = await pool.run({
      kind: "rgb",
      image: { width: 20, height: 20, data: new Uint8Array(1200) },
      maxSliceNums: 9,
      field: "f",
    });
    expect(ok.slices[0]?.width).toBe(448);
  });

  it("drops a queued task when its signal aborts", async () => {
    const big = await sharp({ create: { width: 3000, height: 3000, channels: 3, background: "#345" } })
      .jpeg()
      .toBuffer();
    const first = pool.run({ kind: "encoded", bytes: big, maxSliceNums: 9, limits: LIMITS, field: "a" });
    const ac = new AbortController();
    const second = pool.run({ kind: "encoded", bytes: big, maxSliceNums: 9, limits: LIMITS, field: "b" }, ac.signal);
    expect(pool.queued).toBe(1);
    ac.abort();
    expect((await failure(second)).kind).toBe("cancelled");
    expect(pool.queued).toBe(0);
    const out = await first;
    expect(out.slices).toHaveLength(10);
  });
});
