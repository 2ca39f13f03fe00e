/**
 * Runs one tiny-a golden case through a runner up to the first generated token and measures how far it
 * lands from the goldens: image embeddings (cosine and max abs difference per slice) and the first-step
 * logits (max abs difference, top-1). Used by the int8 vision test and by bench/vision.ts.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { goldenDir, readNpy } from "./testing";
import type { ModelRunner, SeqStep } from "./types";

/** The golden cases with image slices (the text-only case has no vision part). */
export const GOLDEN_IMAGE_CASES = [
  "ii_one_image_unsliced",
  "iii_one_image_sliced",
  "iv_two_images",
  "v_video_4_frames",
];

/** One slice of a golden case's metadata (`meta.json`). */
export interface GoldenSlice {
  width: number;
  height: number;
  preprocess_file: string | null;
}
/** The fields of a golden case's `meta.json` that the model checks read. */
export interface GoldenMeta {
  input_ids: number[];
  slices?: GoldenSlice[];
  image_bound?: [number, number][];
  top5_last: { ids: number[]; logits: number[] };
}

export interface GoldenDistance {
  case: string;
  /** slices encoded (those whose pixels the goldens ship) */
  slices: number;
  /** smallest cosine between an encoded slice's embeddings and the golden resampler rows */
  embedCosineMin: number;
  embedMaxAbsDiff: number;
  /** first-step (last prompt position) logits against logits_last.npy */
  logitMaxAbsDiff: number;
  /** the golden top-1 logit minus the golden top-2 logit (how much room top-1 has) */
  goldenTop1Margin: number;
  top1: number;
  goldenTop1: number;
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return ab / Math.sqrt(aa * bb);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if ((x[i] as number) > (x[best] as number)) best = i;
  return best;
}

/** Encodes the case's slices with `runner`, prefills its prompt over blocks [0, numBlocks) and compares. */
export async function goldenDistance(runner: ModelRunner, name: string): Promise<GoldenDistance> {
  const golden = goldenDir();
  const dir = join(golden, "tiny-a", name);
  const meta = JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")) as GoldenMeta;
  const hid = runner.info.hiddenSize;
  const per = runner.info.queryNum * hid;
  const metaSlices = meta.slices ?? [];
  const ref = readNpy(join(dir, "resampler_out.npy")).data as Float32Array;
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
  let embedCosineMin = 1;
  let embedMaxAbsDiff = 0;
  const slices: Float32Array[] = [];
  for (let i = 0; i < metaSlices.length; i++) {
    const want = ref.subarray(i * per, (i + 1) * per);
    const j = known.indexOf(i);
    if (j >= 0) {
      const got = encoded[j] as Float32Array;
      embedCosineMin = Math.min(embedCosineMin, cosine(got, want));
      embedMaxAbsDiff = Math.max(embedMaxAbsDiff, maxAbsDiff(got, want));
    }
    slices.push(j >= 0 ? (encoded[j] as Float32Array) : want);
  }
  const ids = meta.input_ids;
  const embeds: NonNullable<SeqStep["embeds"]> = (meta.image_bound ?? []).map(([b0, b1], k) => ({
    offset: b0,
    rows: (slices[k] as Float32Array).subarray(0, (b1 - b0) * hid),
  }));
  const table = Array.from({ length: runner.info.numBlocks }, (_, i) => i);
  const [logits] = await runner.step([{ tokenIds: ids, pastLen: 0, blockTable: table, embeds, wantLogits: true }]);
  const last = readNpy(join(dir, "logits_last.npy")).data as Float32Array;
  const [g1, g2] = meta.top5_last.logits as [number, number];
  return {
    case: name,
    slices: known.length,
    embedCosineMin,
    embedMaxAbsDiff,
    logitMaxAbsDiff: maxAbsDiff(logits as Float32Array, last),
    goldenTop1Margin: g1 - g2,
    top1: argmax(logits as Float32Array),
    goldenTop1: meta.top5_last.ids[0] as number,
  };
}
