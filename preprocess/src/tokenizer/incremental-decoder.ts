import type { Tokenizer } from "./tokenizer";

/**
 * Streaming detokenisation: feeds each token's raw bytes to a streaming UTF-8 decoder, so a
 * character whose bytes are spread over several byte-level tokens (or several `push` calls) is
 * emitted once, whole, when its last byte arrives. Invalid bytes become U+FFFD, like HF's
 * `errors="replace"`.
 */
export class IncrementalDecoder {
  private readonly decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  private readonly skipSpecialTokens: boolean;

  constructor(
    private readonly tok: Tokenizer,
    opts: { skipSpecialTokens?: boolean } = {},
  ) {
    this.skipSpecialTokens = opts.skipSpecialTokens ?? false;
  }

  /** Adds tokens; returns only the text completed by them (possibly ""). */
  push(ids: readonly number[]): string {
    let len = 0;
    const parts: Uint8Array[] = [];
    for (const id of ids) {
      if (this.skipSpecialTokens && this.tok.isSpecial(id)) continue;
      const b = this.tok.tokenBytes(id);
      parts.push(b);
      len += b.length;
    }
    if (len === 0) return "";
    const bytes = new Uint8Array(len);
    let offset = 0;
    for (const b of parts) {
      bytes.set(b, offset);
      offset += b.length;
    }
    return this.decoder.decode(bytes, { stream: true });
  }

  /** Ends the stream: returns U+FFFD for a trailing incomplete character, else "". */
  flush(): string {
    return this.decoder.decode();
  }
}
