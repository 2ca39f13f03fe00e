import { describe, expect, it } from "vitest";
import { errorOf, expectValidationError, gpu0, postJson, setup } from "../testing/app-harness";
import { FAKE_TOKENS_PER_IMAGE, FAKE_TOKENS_PER_MESSAGE, FAKE_VOCAB_SIZE } from "../testing/fakes";

describe("POST /tokenize and /detokenize (vLLM's)", () => {
  it("tokenizes a raw prompt without the chat template", async () => {
    const s = setup();
    const res = await postJson(s.app, "/tokenize", { model: "openbmb/MiniCPM-V-2_6", prompt: "one two three" });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      model: "openbmb/MiniCPM-V-2_6",
      count: 3,
      max_model_len: 4096,
      tokens: [0, 1, 2],
      token_strs: null,
    });
    expect(s.pre.calls[0]).toMatchObject({ rawPrompt: "one two three", messages: [], addGenerationPrompt: false });
    expect(s.pre.calls[0]?.options.maxPromptTokens).toBe(4095);
    expect(gpu0(s).calls).toHaveLength(0);
  });

  it("tokenizes chat messages with their images through the chat template", async () => {
    const s = setup();
    const res = await postJson(s.app, "/tokenize", {
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: "https://example.org/cat.png" } },
            { type: "text", text: "what is it" },
          ],
        },
      ],
      mm_processor_kwargs: { max_slice_nums: 4 },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { count: number; tokens: number[] };
    // FakePreprocess: a fixed count per message, one per word, one per image.
    expect(body.count).toBe(FAKE_TOKENS_PER_MESSAGE + 3 + FAKE_TOKENS_PER_IMAGE);
    expect(body.tokens).toHaveLength(body.count);
    expect(s.pre.calls[0]).toMatchObject({
      addGenerationPrompt: true,
      options: { maxSliceNums: 4 },
      messages: [{ role: "user", parts: [{ kind: "image" }, { kind: "text", text: "what is it" }] }],
    });
  });

  it("detokenizes ids, naming a bad id by its index", async () => {
    const s = setup();
    const res = await postJson(s.app, "/detokenize", { tokens: [5, 7] });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ model: "openbmb/MiniCPM-V-2_6", prompt: "t5 t7" });
    const badId = await postJson(s.app, "/detokenize", { tokens: [1, FAKE_VOCAB_SIZE] });
    expect(badId.status).toBe(400);
    expect(await errorOf(badId)).toMatchObject({
      param: "tokens[1]",
      message: `tokens[1]: ${FAKE_VOCAB_SIZE} is outside the vocabulary (0..${FAKE_VOCAB_SIZE - 1})`,
    });
  });

  it("validates, checks the model, and needs the API key like /v1", async () => {
    const s = setup();
    await expectValidationError(s, await postJson(s.app, "/detokenize", { tokens: [] }), "tokens", />=1/);
    const w = setup();
    await expectValidationError(
      w,
      await postJson(w.app, "/detokenize", { tokens: [1, 5e9] }),
      "tokens[1]",
      /<=4294967295/,
    );
    const t = setup();
    await expectValidationError(t, await postJson(t.app, "/tokenize", { prompt: 3 }), "prompt", /string/);
    const u = setup();
    await expectValidationError(
      u,
      await postJson(u.app, "/tokenize", { prompt: "x", return_token_strs: true }),
      "return_token_strs",
      /not supported/,
    );
    const other = await postJson(setup().app, "/tokenize", { model: "gpt-4o", prompt: "x" });
    expect([other.status, (await errorOf(other)).param]).toEqual([404, "model"]);
    const keyed = setup({ API_KEYS: "sk-1" });
    expect((await postJson(keyed.app, "/tokenize", { prompt: "x" })).status).toBe(401);
    expect((await postJson(keyed.app, "/detokenize", { tokens: [1] })).status).toBe(401);
    const ok = await postJson(keyed.app, "/tokenize", { prompt: "x" }, { authorization: "Bearer sk-1" });
    expect(ok.status).toBe(200);
  });
});
