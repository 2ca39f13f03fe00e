/**
 * Incremental detokenisation of one completion with stop strings.
 *
 * Token bytes go through a streaming UTF-8 decoder (a character split over tokens is held until complete),
 * then through the stop-string matcher: text that could still be the start of a stop string is held back,
 * so a stop string never reaches the output even when it spans several tokens.
 */

import type { TokenBytes } from "./types";

/** The text of one completion as tokens arrive. */
export class OutputText {
  private readonly decoder = new TextDecoder("utf-8", { fatal: false });
  private pending = "";
  private stopped = false;
  private readonly maxStop: number;

  /** @param skipSpecial leave special tokens out of the text (they still count as generated tokens) */
  constructor(
    private readonly tok: TokenBytes,
    private readonly stops: readonly string[],
    private readonly skipSpecial = false,
  ) {
    this.maxStop = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /**
   * Adds one token. Returns the text that is now final, and the stop string if one completed (the text up
   * to it is returned; the stop string and anything after it are dropped).
   * @param checkStops false while min_tokens is not reached (stop strings do not count yet)
   */
  push(tokenId: number, checkStops = true): { text: string; stop?: string } {
    if (this.stopped) return { text: "" };
    if (!(this.skipSpecial && this.tok.isSpecial?.(tokenId)))
      this.pending += this.decoder.decode(this.tok.tokenBytes(tokenId), { stream: true });
    return this.drain(checkStops);
  }

  /** Ends the completion: returns the held-back text (an incomplete UTF-8 tail becomes U+FFFD). */
  flush(): string {
    if (this.stopped) return "";
    this.stopped = true;
    const out = this.pending + this.decoder.decode();
    this.pending = "";
    return out;
  }

  private drain(checkStops: boolean): { text: string; stop?: string } {
    if (this.stops.length === 0) {
      const text = this.pending;
      this.pending = "";
      return { text };
    }
    if (checkStops) {
      let at = -1;
      let which = "";
      for (const s of this.stops) {
        const i = this.pending.indexOf(s);
        if (i >= 0 && (at < 0 || i < at)) {
          at = i;
          which = s;
        }
      }
      if (at >= 0) {
        const text = this.pending.slice(0, at);
        this.pending = "";
        this.stopped = true;
        return { text, stop: which };
      }
    }
    // Hold back the longest tail that is a proper prefix of some stop string.
    let hold = 0;
    const n = this.pending.length;
    for (let k = Math.min(n, this.maxStop - 1); k > 0 && hold === 0; k--) {
      const tail = this.pending.slice(n - k);
      if (this.stops.some((s) => s.length > k && s.startsWith(tail))) hold = k;
    }
    const text = this.pending.slice(0, n - hold);
    this.pending = this.pending.slice(n - hold);
    return { text };
  }
}
