/**
 * Placeholder runs of a prompt: where each media slice's embedding rows go, checked against the prompt
 * (errors name the field and the limit).
 */

import type { MediaSpan } from "./kv-cache-manager";
import { type PromptInput, RequestError } from "./types";

/** The prompt's placeholder runs, sorted by position; throws `RequestError` for malformed media. */
export function promptMediaSpans(prompt: PromptInput, queryNum: number): MediaSpan[] {
  const q = queryNum;
  const n = prompt.tokenIds.length;
  const spans: MediaSpan[] = [];
  for (const [mi, m] of prompt.media.entries()) {
    if (m.contentHash === "")
      throw new RequestError("invalid_argument", `prompt.media[${mi}].content_hash: must not be empty`);
    for (const [k, s] of m.slices.entries()) {
      const f = `prompt.media[${mi}].slices[${k}]`;
      if (s.width <= 0 || s.height <= 0 || s.width % 14 !== 0 || s.height % 14 !== 0)
        throw new RequestError("invalid_argument", `${f}: ${s.width}x${s.height} must be positive multiples of 14`);
      if (s.rgb.length !== s.width * s.height * 3)
        throw new RequestError(
          "invalid_argument",
          `${f}.rgb: ${s.rgb.length} bytes, expected width*height*3 = ${s.width * s.height * 3}`,
        );
      if (s.tokenOffset + q > n)
        throw new RequestError(
          "invalid_argument",
          `${f}.token_offset: ${s.tokenOffset} + ${q} placeholders exceeds the ${n} prompt tokens`,
        );
      spans.push({ start: s.tokenOffset, end: s.tokenOffset + q, key: `${m.contentHash}:${k}` });
    }
  }
  spans.sort((a, b) => a.start - b.start);
  for (let i = 1; i < spans.length; i++)
    if ((spans[i] as MediaSpan).start < (spans[i - 1] as MediaSpan).end)
      throw new RequestError(
        "invalid_argument",
        `prompt.media: placeholder runs overlap at token ${(spans[i] as MediaSpan).start}`,
      );
  return spans;
}
