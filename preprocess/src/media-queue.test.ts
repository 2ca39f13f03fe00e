import { afterAll, describe, expect, it } from "vitest";
import { WorkerPool } from "./pool";
import { failure, goldenBytes } from "./testing/fixtures";
import { VideoSlots } from "./video/video-slots";

const LIMITS = { maxBytes: 1e8, maxPixels: 1e8, maxDimension: 20000 };
const frame = (i: number) => ({
  kind: "rgb" as const,
  image: { width: 448, height: 448, data: new Uint8Array(448 * 448 * 3).fill(i) },
  maxSliceNums: 1,
  field: `frame ${i}`,
});

describe("the media queue", () => {
  const pool = new WorkerPool(1, 8);
  afterAll(() => pool.close());

  it("serves still images before queued video frames", async () => {
    const order: string[] = [];
    const frames = Array.from({ length: 6 }, (_, i) => pool.run(frame(i)).then(() => order.push(`frame ${i}`)));
    const image = pool
      .run({
        kind: "encoded",
        bytes: goldenBytes("images/img_097x131.png"),
        maxSliceNums: 1,
        limits: LIMITS,
        field: "img",
      })
      .then(() => order.push("image"));
    await Promise.all([...frames, image]);
    // frame 0 was already running when the image arrived; the image then went before every waiting frame.
    expect(order.indexOf("image")).toBeLessThanOrEqual(1);
  });

  it("refuses a task past MEDIA_QUEUE_MAX as capacity, never queueing without end", async () => {
    const tasks = Array.from({ length: 12 }, (_, i) => pool.run(frame(i)));
    const outcomes = await Promise.allSettled(tasks);
    const refused = outcomes.filter((o) => o.status === "rejected");
    expect(refused.length).toBeGreaterThan(0);
    const e = await failure(Promise.reject((refused[0] as PromiseRejectedResult).reason));
    expect([e.kind, e.message]).toEqual([
      "resource_exhausted",
      "the media queue is full (8 tasks waiting); retry later",
    ]);
  });
});

describe("video decode slots", () => {
  it("lets MAX_CONCURRENT_VIDEOS run, queues MAX_QUEUED_VIDEOS, refuses the rest, hands slots on in order", async () => {
    const slots = new VideoSlots(2, 1);
    const a = await slots.acquire();
    const b = await slots.acquire();
    let cGot = false;
    const c = slots.acquire().then((r) => {
      cGot = true;
      return r;
    });
    expect(slots.queued).toBe(1);
    const d = await failure(slots.acquire());
    expect([d.kind, d.message]).toEqual(["resource_exhausted", "3 videos are being decoded or waiting; retry later"]);
    a();
    a(); // releasing twice frees one slot only
    const cr = await c;
    expect(cGot).toBe(true);
    const ac = new AbortController();
    const e = slots.acquire(ac.signal);
    ac.abort();
    expect((await failure(e)).kind).toBe("cancelled");
    b();
    cr();
    expect(slots.queued).toBe(0);
    const again = await slots.acquire();
    again();
  });
});
