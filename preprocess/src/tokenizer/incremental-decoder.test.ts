import { beforeAll, describe, expect, it } from "vitest";
import { buildTokenizerFiles, createTokenizer, IncrementalDecoder, type Tokenizer } from "./index";

let tok: Tokenizer;

beforeAll(() => {
  const files = buildTokenizerFiles();
  tok = createTokenizer(files.tokenizerJson, files.tokenizerConfig);
}, 60_000);

function streamOneByOne(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string[] {
  const d = new IncrementalDecoder(tok, opts);
  const out = ids.map((id) => d.push([id]));
  out.push(d.flush());
  return out;
}

describe("IncrementalDecoder", () => {
  it("emits a 4-byte character only when its last token arrives", () => {
    // "𓀀" = F0 93 80 80 -> tokens [F0 93], [80], [80]
    expect(streamOneByOne(tok.encode("a𓀀b"))).toEqual(["a", "", "", "𓀀", "b", ""]);
  });

  it("handles characters split across tokens and across push calls", () => {
    const text = "🦩 𝔘𝔫𝔦 龘鱻 🧑‍🚀 done";
    const ids = tok.encode(text);
    expect(ids.length).toBeGreaterThan(10);
    const chunks = streamOneByOne(ids);
    expect(chunks.join("")).toBe(text);
    for (const c of chunks) expect(c).not.toContain("\uFFFD");
    // uneven chunking gives the same text
    const d = new IncrementalDecoder(tok);
    let out = "";
    for (let i = 0; i < ids.length; i += 3) out += d.push(ids.slice(i, i + 3));
    expect(out + d.flush()).toBe(text);
  });

  it("equals decode for a whole answer", () => {
    const text = "Hello! 你好，世界 😀 naïve café 12345\n<|im_end|>";
    const ids = tok.encode(text);
    expect(streamOneByOne(ids).join("")).toBe(tok.decode(ids));
    expect(streamOneByOne(ids, { skipSpecialTokens: true }).join("")).toBe(
      tok.decode(ids, { skipSpecialTokens: true }),
    );
  });

  it("flush reports an incomplete trailing character as U+FFFD", () => {
    const d = new IncrementalDecoder(tok);
    expect(d.push([124373])).toBe("");
    expect(d.flush()).toBe("\uFFFD");
  });
});
