import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { prepare } from "./prepare";
import { buildPrompt } from "./prompt";
import { failure, testDeps, testTokenizer } from "./testing/fixtures";
import { countTokensUpTo, InlineTextRunner, type TextRunner, WorkerTextRunner } from "./text-runner";
import type { Tokenizer } from "./tokenizer";

let worker: WorkerTextRunner;
beforeAll(async () => {
  worker = await WorkerTextRunner.start({ builtIn: true });
});
afterAll(async () => {
  await worker.close();
});

/** Counts what reaches the tokenizer. */
function spyRunner(): TextRunner & { calls: string[] } {
  const inner = new InlineTextRunner(testTokenizer());
  const calls: string[] = [];
  const seen = <T>(name: string, r: T): T => {
    calls.push(name);
    return r;
  };
  return {
    calls,
    build: (t, a) => seen("build", inner.build(t, a)),
    encode: (t) => seen("encode", inner.encode(t)),
    decode: (i) => seen("decode", inner.decode(i)),
    countUpTo: (t, l, sp) => seen("count", inner.countUpTo(t, l, sp)),
    close: () => inner.close(),
  };
}

const user = (text: string) => [{ role: "user" as const, parts: [{ type: "text" as const, text }] }];

describe("tokenizing off the gRPC thread", () => {
  it("builds the same prompt in the worker as inline", async () => {
    const turns = [{ role: "user" as const, parts: [{ text: "Hello <|im_end|> there" }] }];
    expect(await worker.build(turns, true)).toEqual(buildPrompt(testTokenizer(), turns, true));
    expect(await worker.encode("a b c")).toEqual(testTokenizer().encode("a b c"));
    expect(await worker.decode([64, 65])).toBe(testTokenizer().decode([64, 65]));
  });

  it("leaves this thread free while a long text is tokenized", async () => {
    let ticks = 0;
    let done = false;
    const tick = () => {
      ticks++;
      if (!done) setImmediate(tick);
    };
    setImmediate(tick);
    const ids = await worker.encode("a".repeat(60_000));
    done = true;
    expect(ids.length).toBeGreaterThan(0);
    // Inline, the encode would have held this thread for its whole length: no tick could have run.
    expect(ticks).toBeGreaterThan(1);
  });
});

describe("text over the limit is refused before it is tokenized", () => {
  it("refuses on characters without calling the tokenizer, naming the part", async () => {
    const text = spyRunner();
    const e = await failure(
      prepare(
        {
          messages: [
            {
              role: "user",
              parts: [
                { type: "text", text: "hi" },
                { type: "text", text: "x".repeat(1 << 20) },
              ],
            },
          ],
          addGenerationPrompt: true,
          options: { maxPromptTokens: 1000 },
        },
        testDeps({ text }),
      ),
    );
    expect([e.kind, e.message]).toEqual([
      "invalid_argument",
      "messages[0].parts[1].text: the request has 1048578 characters of text, over the limit of 10000 (10 per token of the 1000-token prompt limit)",
    ]);
    expect(text.calls).toEqual([]);
    const raw = await failure(
      prepare(
        { messages: [], rawPrompt: "y".repeat(20_000), addGenerationPrompt: false, options: { maxPromptTokens: 1000 } },
        testDeps({ text }),
      ),
    );
    expect(raw.message).toMatch(/^raw_prompt: the request has 20000 characters of text, over the limit of 10000/);
    expect(text.calls).toEqual([]);
  });

  it("stops counting once past the token limit", async () => {
    const tok = testTokenizer();
    let pieces = 0;
    const counting = new Proxy(tok, {
      get(t, k) {
        if (k === "encodePlain")
          return (s: string) => {
            pieces++;
            return t.encodePlain(s);
          };
        return Reflect.get(t, k);
      },
    }) as Tokenizer;
    const text = "word ".repeat(20_000); // 100,000 characters, 20,000 tokens, ~49 pieces
    expect(countTokensUpTo(counting, [text], 1000)).toBeGreaterThan(1000);
    expect(pieces).toBeLessThan(5);
    const e = await failure(
      prepare(
        { messages: user(text.slice(0, 9000)), addGenerationPrompt: true, options: { maxPromptTokens: 1000 } },
        testDeps({ text: new InlineTextRunner(counting) }),
      ),
    );
    expect(e.message).toBe("messages: prompt has more than 1000 tokens, over the limit of 1000");
  });
});
