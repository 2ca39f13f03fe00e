/**
 * Incremental parser for a `text/event-stream` body (WHATWG "server-sent events" framing).
 *
 * Feed it decoded text as it arrives; it returns the `data` of every event completed so far.
 * Only the `data` field matters for the OpenAI stream: `event`, `id`, `retry` and comment lines
 * are skipped. Several `data:` lines in one event are joined with "\n", as the spec says.
 */
export class SseParser {
  private buffer = "";
  private dataLines: string[] = [];

  /** Adds a chunk of text and returns the data of each event it completed, in order. */
  push(chunk: string): string[] {
    this.buffer += chunk;
    const events: string[] = [];
    for (;;) {
      const newline = this.buffer.search(/\r\n|\r|\n/);
      if (newline < 0) break;
      // NOTE: a lone "\r" at the very end may be the first half of "\r\n"; wait for more text.
      if (this.buffer[newline] === "\r" && newline === this.buffer.length - 1) break;
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      const line = this.buffer.slice(0, newline);
      this.buffer = this.buffer.slice(newline + width);
      const data = this.line(line);
      if (data !== null) events.push(data);
    }
    return events;
  }

  /**
   * Ends the stream and returns an event left without its closing blank line. Browsers drop
   * such an event; we keep it, since it may be the error that explains why the stream ended.
   */
  end(): string[] {
    const events = this.buffer.length > 0 ? this.push("\n") : [];
    if (this.dataLines.length > 0) {
      events.push(this.dataLines.join("\n"));
      this.dataLines = [];
    }
    return events;
  }

  private line(line: string): string | null {
    if (line === "") {
      if (this.dataLines.length === 0) return null;
      const data = this.dataLines.join("\n");
      this.dataLines = [];
      return data;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    if (field !== "data") return null;
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    this.dataLines.push(value);
    return null;
  }
}
