/**
 * Chat turns with media -> prompt text and token ids (MINICPMV26.md §3.8, §6.1, §6.3).
 *
 *   turns ──join parts with "\n", media as "(<image>./</image>)"──► chat template ──► split on markers
 *         ──► k-th marker := placeholder(k) ──► encodeRendered ──► ids, then image_bound → slice offsets
 *
 * NOTE: all client text is escaped before rendering, so special-token strings typed by a user stay text
 * and cannot forge image positions or end a turn; only markers and placeholders inserted here are real.
 */

import { invalid, PreprocessError } from "./errors";
import { imagePlaceholder, QUERY_NUM } from "./image/placeholder";
import type { Grid } from "./image/slice";
import type { ChatMessage, Tokenizer } from "./tokenizer";
import type { Modality, Role, TokenCounts } from "./types";

/** The literal image marker of the reference's `chat()`. */
export const IMAGE_MARKER = "(<image>./</image>)";

/** A media item as the prompt sees it. */
export interface PromptMedia {
  readonly modality: Modality;
  /** The placeholder grid (null: unsliced). */
  readonly grid: Grid | null;
  /** Slices the pixels were cut into (overview + tiles). */
  readonly sliceCount: number;
  readonly useImageId: boolean;
}

/** A part of a turn: text, or a media item (a video contributes one part per frame). */
export type PromptPart = { readonly text: string } | { readonly media: PromptMedia };

/** A chat turn for prompt building. */
export interface PromptTurn {
  readonly role: Role;
  readonly parts: readonly PromptPart[];
}

/** The built prompt. */
export interface BuiltPrompt {
  /** The prompt text with user text unescaped (for display and debugging). */
  readonly text: string;
  readonly tokenIds: number[];
  /** Per media item (prompt order), the offset of each slice's first `<unk>`. */
  readonly sliceOffsets: number[][];
  readonly tokenCounts: TokenCounts;
}

/** Renders `turns` with the checkpoint's chat template and expands the image placeholders. */
export function buildPrompt(tok: Tokenizer, turns: readonly PromptTurn[], addGenerationPrompt: boolean): BuiltPrompt {
  const media: PromptMedia[] = [];
  const messages: ChatMessage[] = turns.map((t) => ({
    role: t.role,
    content: t.parts
      .map((p) => {
        if ("text" in p) return tok.escapeUserText(p.text);
        media.push(p.media);
        return IMAGE_MARKER;
      })
      .join("\n"),
  }));
  const rendered = tok.renderChat(messages, { addGenerationPrompt });
  const pieces = rendered.split(IMAGE_MARKER);
  if (pieces.length !== media.length + 1) {
    throw new PreprocessError("internal", `rendered prompt has ${pieces.length - 1} markers for ${media.length} media`);
  }
  // Image ids count the items that show one, across the whole conversation (0-based).
  let nextId = 0;
  const placeholders = media.map((m) => imagePlaceholder(m.grid, m.useImageId ? nextId++ : 0, m.useImageId));
  let text = pieces[0] as string;
  placeholders.forEach((ph, k) => {
    text += ph + (pieces[k + 1] as string);
  });
  const tokenIds = tok.encodeRendered(text);
  const sliceOffsets = assignSliceOffsets(tok, tokenIds, media);
  let image = 0;
  let video = 0;
  const phTokens = new Map<string, number>();
  placeholders.forEach((ph, k) => {
    let n = phTokens.get(ph);
    if (n === undefined) {
      n = tok.encodeRendered(ph).length;
      phTokens.set(ph, n);
    }
    if ((media[k] as PromptMedia).modality === "video") video += n;
    else image += n;
  });
  const total = tokenIds.length;
  return {
    text: tok.unescape(text),
    tokenIds,
    sliceOffsets,
    tokenCounts: { text: total - image - video, image, video, total },
  };
}

/**
 * `image_bound` (§6.1): each `<image>`/`<slice>` opens a run of `<unk>` closed by `</image>`/`</slice>`.
 * The k-th run belongs to the k-th slice in prompt order.
 */
function assignSliceOffsets(tok: Tokenizer, ids: readonly number[], media: readonly PromptMedia[]): number[][] {
  const s = tok.specialIds;
  const starts: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id === s.image || id === s.slice) {
      const close = id === s.image ? s.imageEnd : s.sliceEnd;
      const end = i + 1 + QUERY_NUM;
      if (ids[end] !== close || ids.slice(i + 1, end).some((x) => x !== s.unk)) {
        throw new PreprocessError("internal", `malformed image placeholder at token ${i}`);
      }
      starts.push(i + 1);
      i = end;
    }
  }
  const expected = media.reduce((n, m) => n + m.sliceCount, 0);
  if (starts.length !== expected) {
    // Only possible when the placeholder grid and the slicing grid disagree in slice count.
    throw invalid(`the prompt has ${starts.length} image placeholders but the media have ${expected} slices`);
  }
  let k = 0;
  return media.map((m) => {
    const offsets = starts.slice(k, k + m.sliceCount);
    k += m.sliceCount;
    return offsets;
  });
}
