import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTinyCheckpoint } from "../checkpoint";
import type { GoldenMeta as GoldenCaseMeta, GoldenSlice } from "./golden-check";
import { createModelRunner, type ModelRunner, type SeqStep } from "./index";
import { goldenDir, readNpy } from "./testing";

interface GoldenMeta extends GoldenCaseMeta {
  greedy_tokens: number[];
  greedy_steps: { token: number; top5_ids: number[]; top5_logits: number[] }[];
}

const CASES = ["i_text_only", "ii_one_image_unsliced", "iii_one_image_sliced", "iv_two_images", "v_video_4_frames"];
const golden = goldenDir();
// Tolerances from golden/README.md "Tolerances" (float32 port).
const RESAMPLER_TOL = 1e-4;
const LOGIT_TOL = 1e-3;
const CHUNK = 128; // prefill in chunks, so chunked prefill over the paged pool is exercised too

function topK(x: Float32Array, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < x.length; i++) {
    idx.push(i);
    idx.sort((a, b) => (x[b] as number) - (x[a] as number));
    if (idx.length > k) idx.pop();
  }
  return idx;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

describe("tiny-a against the upstream goldens", () => {
  let runner: ModelRunner;
  beforeAll(async () => {
    runner = await createModelRunner({ modelDir: await ensureTinyCheckpoint(), numBlocks: 64, intraOpThreads: 2 });
  });
  afterAll(async () => runner?.dispose());

  it.each(CASES)("%s: resampler outputs, last logits, top-5 and 16 greedy tokens", async (name) => {
    const dir = join(golden, "tiny-a", name);
    const meta = JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")) as GoldenMeta;
    const hid = runner.info.hiddenSize;
    const per = runner.info.queryNum * hid;

    // Slice embeddings: encode every slice whose pixels the goldens ship; the held-back slices (video frames
    // 1-3) use the golden resampler rows so the LLM part is still checked end to end.
    const metaSlices = meta.slices ?? [];
    const slices: Float32Array[] = [];
    if (metaSlices.length > 0) {
      const ref = readNpy(join(dir, "resampler_out.npy")).data as Float32Array; // [n,64,hid]
      const known = metaSlices.flatMap((s, i) => (s.preprocess_file ? [i] : []));
      const encoded = await runner.encodeSlices(
        known.map((i) => {
          const s = metaSlices[i] as GoldenSlice;
          return {
            width: s.width,
            height: s.height,
            rgb: readNpy(join(golden, s.preprocess_file as string)).data as Uint8Array,
          };
        }),
      );
      expect(encoded.length).toBe(known.length);
      for (let i = 0; i < metaSlices.length; i++) {
        const want = ref.subarray(i * per, (i + 1) * per);
        const j = known.indexOf(i);
        if (j >= 0) expect(maxDiff(encoded[j] as Float32Array, want), `slice ${i}`).toBeLessThan(RESAMPLER_TOL);
        slices.push(j >= 0 ? (encoded[j] as Float32Array) : want);
      }
      expect(known.length).toBeGreaterThan(0);
    }

    // Prefill in chunks over a contiguous block table, image rows written at image_bound.
    const ids = meta.input_ids;
    const table = Array.from({ length: runner.info.numBlocks }, (_, i) => i);
    let logits: Float32Array | null = null;
    for (let start = 0; start < ids.length; start += CHUNK) {
      const end = Math.min(ids.length, start + CHUNK);
      const embeds: NonNullable<SeqStep["embeds"]> = [];
      (meta.image_bound ?? []).forEach(([b0, b1], k) => {
        const lo = Math.max(b0, start);
        const hi = Math.min(b1, end);
        if (lo < hi)
          embeds.push({
            offset: lo - start,
            rows: (slices[k] as Float32Array).subarray((lo - b0) * hid, (hi - b0) * hid),
          });
      });
      [logits] = await runner.step([
        { tokenIds: ids.slice(start, end), pastLen: start, blockTable: table, embeds, wantLogits: end === ids.length },
      ]);
    }
    const last = readNpy(join(dir, "logits_last.npy")).data as Float32Array;
    expect(maxDiff(logits as Float32Array, last)).toBeLessThan(LOGIT_TOL);
    expect(topK(logits as Float32Array, 5)).toEqual(meta.top5_last.ids);

    // Greedy decode: 16 tokens, with the top-5 logits of every step.
    const tokens: number[] = [];
    let pos = ids.length;
    for (const step of meta.greedy_steps) {
      const top = topK(logits as Float32Array, 5);
      expect(top).toEqual(step.top5_ids);
      expect(
        maxDiff(
          top.map((t) => (logits as Float32Array)[t] as number),
          step.top5_logits,
        ),
      ).toBeLessThan(LOGIT_TOL);
      tokens.push(top[0] as number);
      [logits] = await runner.step([
        { tokenIds: [top[0] as number], pastLen: pos, blockTable: table, wantLogits: true },
      ]);
      pos++;
    }
    expect(tokens).toEqual(meta.greedy_tokens);
  });
});
