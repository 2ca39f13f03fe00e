import { describe, expect, it } from "vitest";
import { imagePlaceholder } from "./image/placeholder";
import { sliceCount, sliceGeometry } from "./image/slice";
import { buildPrompt } from "./prompt";
import { goldenJson, testTokenizer } from "./testing/fixtures";

interface GeometryCase {
  width: number;
  height: number;
  max_slice_nums: number;
  use_image_id: boolean;
  input_ids?: number[];
  image_bound?: [number, number][];
  error: string | null;
}

const cases = goldenJson<{ cases: GeometryCase[] }>("preprocess/cases.json").cases.filter((c) => !c.error);

describe("placeholder ids and image_bound match cases.json", () => {
  const tok = testTokenizer();
  for (const c of cases) {
    it(`${c.width}x${c.height} M=${c.max_slice_nums}`, () => {
      const g = sliceGeometry(c.width, c.height, c.max_slice_nums);
      expect(tok.encodeRendered(imagePlaceholder(g.gridPlaceholder, 0, c.use_image_id))).toEqual(c.input_ids);
      // The same through buildPrompt: offsets of the placeholder inside a bare user turn.
      const built = buildPrompt(
        tok,
        [
          {
            role: "user",
            parts: [
              {
                media: {
                  modality: "image",
                  grid: g.gridPlaceholder,
                  sliceCount: sliceCount(g),
                  useImageId: c.use_image_id,
                },
              },
            ],
          },
        ],
        false,
      );
      const prefix = 14; // "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
      expect(built.sliceOffsets[0]?.map((o) => [o - prefix, o - prefix + 64])).toEqual(c.image_bound);
      expect(built.tokenCounts.image).toBe(c.input_ids?.length);
      expect(built.tokenCounts.text).toBe(prefix + 2);
    });
  }
});
