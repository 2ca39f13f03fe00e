import { describe, expect, it } from "vitest";
import { SseParser } from "./sse";

describe("SseParser", () => {
  it("returns data of complete events only, across arbitrary chunk boundaries", () => {
    const parser = new SseParser();
    expect(parser.push('data: {"a"')).toEqual([]);
    expect(parser.push(":1}\n")).toEqual([]);
    expect(parser.push("\ndata: [DO")).toEqual(['{"a":1}']);
    expect(parser.push("NE]\n\n")).toEqual(["[DONE]"]);
  });

  it("handles CRLF and CR line ends, including a CRLF split between chunks", () => {
    const parser = new SseParser();
    expect(parser.push("data: one\r")).toEqual([]);
    expect(parser.push("\n\r\ndata: two\r\r")).toEqual(["one"]);
    expect(parser.push("data: three\n\n")).toEqual(["two", "three"]);
  });

  it("joins multi-line data, skips comments and other fields, strips one leading space", () => {
    const parser = new SseParser();
    const events = parser.push(": keep-alive\n\nevent: x\nid: 7\ndata:  two spaces\ndata:nospace\n\n");
    expect(events).toEqual([" two spaces\nnospace"]);
  });

  it("end() dispatches a last event that lacks its blank line", () => {
    const parser = new SseParser();
    expect(parser.push('data: {"error":{"message":"boom"}}')).toEqual([]);
    expect(parser.end()).toEqual(['{"error":{"message":"boom"}}']);
    expect(parser.end()).toEqual([]);
  });
});
