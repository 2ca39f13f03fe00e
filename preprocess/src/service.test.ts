import { PreprocessService, Role } from "@minicpmv/proto";
import { createClient, createServer, type GrpcError, grpc, listen, shutdown } from "@minicpmv/proto/grpc";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WorkerPool } from "./pool";
import { registerPreprocessService } from "./service";
import { goldenBytes, testDeps } from "./testing/fixtures";

describe("PreprocessService.Prepare over gRPC (loopback, 2 worker threads)", () => {
  const pool = new WorkerPool(2);
  const server = createServer({ maxMessageBytes: 64 * 1024 * 1024 });
  let client: ReturnType<typeof createClient<typeof PreprocessService.method>>;

  beforeAll(async () => {
    registerPreprocessService(server, testDeps({}, pool));
    const port = await listen(server, "127.0.0.1", 0);
    client = createClient(PreprocessService, `127.0.0.1:${port}`, { maxMessageBytes: 64 * 1024 * 1024 });
  });

  afterAll(async () => {
    client.close();
    await shutdown(server, 1000);
    await pool.close();
  });

  const user = (parts: object[]) => [{ role: Role.USER, parts }];
  const text = (t: string) => ({ part: { case: "text", value: t } });
  const image = (data: Uint8Array) => ({ part: { case: "image", value: { source: { case: "data", value: data } } } });

  it("returns a 1344x1344 JPEG as 10 slices (over 4 MiB) with offsets and counts", async () => {
    const raw = Buffer.alloc(1344 * 1344 * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 7 + (i >> 12)) & 255;
    const jpeg = await sharp(raw, { raw: { width: 1344, height: 1344, channels: 3 } })
      .jpeg()
      .toBuffer();
    const res = await client.prepare({
      requestId: "big",
      messages: user([image(jpeg), text("What is 2 plus 2?")]) as never,
      addGenerationPrompt: true,
    });
    const p = res.prompt;
    if (!p) throw new Error("no prompt");
    const [m] = p.media;
    expect(p.media).toHaveLength(1);
    expect([m?.sourceWidth, m?.sourceHeight, m?.gridCols, m?.gridRows]).toEqual([1344, 1344, 3, 3]);
    expect(m?.slices.map((s) => [s.width, s.height, s.rgb.length])).toEqual(Array(10).fill([448, 448, 448 * 448 * 3]));
    expect(m?.slices.reduce((n, s) => n + s.rgb.length, 0)).toBeGreaterThan(4 * 1024 * 1024);
    expect(m?.contentHash.length).toBe(32);
    // Offsets point at runs of 64 <unk> (128244).
    for (const s of m?.slices ?? []) {
      expect(p.tokenIds.slice(s.tokenOffset, s.tokenOffset + 64)).toEqual(Array(64).fill(128244));
    }
    // 665 placeholder tokens (§3.7) + the 27-token text-only prompt + one "\n" join.
    expect(p.tokenCounts).toMatchObject({ image: 665, video: 0, text: 28, total: 693 });
    expect(p.tokenIds).toHaveLength(693);
    expect(res.preprocessMs).toBeGreaterThan(0);
  });

  it("matches the golden prompt for a small PNG through the worker pool", async () => {
    const res = await client.prepare({
      messages: user([image(goldenBytes("images/img_500x300.png")), text("What is 2 plus 2?")]) as never,
      addGenerationPrompt: true,
    });
    expect(res.prompt?.tokenIds).toHaveLength(97);
    expect(res.prompt?.media[0]?.slices[0]?.tokenOffset).toBe(18);
  });

  const code = (p: Promise<unknown>) =>
    p.then(
      () => "OK",
      (e: GrpcError) => `${grpc.status[e.code]}: ${e.message}`,
    );

  it("maps errors to gRPC codes", async () => {
    const many = Array.from({ length: 17 }, () => image(goldenBytes("images/img_097x131.png")));
    expect(await code(client.prepare({ messages: user(many) as never }))).toBe(
      "INVALID_ARGUMENT: messages: the request has 17 images, over the limit of 16",
    );
    expect(
      await code(
        client.prepare({
          messages: user([text("What is 2 plus 2?")]) as never,
          addGenerationPrompt: true,
          options: { maxPromptTokens: 10 },
        }),
      ),
    ).toBe("INVALID_ARGUMENT: prompt has 27 tokens, over the limit of 10 by 17");
    expect(await code(client.prepare({ messages: [{ role: Role.UNSPECIFIED, parts: [] }] }))).toBe(
      "INVALID_ARGUMENT: messages[0].role must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT",
    );
    expect(await code(client.prepare({ messages: user([{ part: { case: undefined } }]) as never }))).toBe(
      "INVALID_ARGUMENT: messages[0].parts[0]: empty content part (set text, image or video)",
    );
  });

  it("carries raw_prompt and prompt_token_ids (legacy completions)", async () => {
    const raw = await client.prepare({ rawPrompt: "<|im_start|>user\nhi" });
    expect(raw.prompt?.tokenIds).toEqual([151644, 872, 198, 6023]);
    expect(raw.prompt?.promptText).toBe("<|im_start|>user\nhi");
    const ids = await client.prepare({ promptTokenIds: [6023, 151645] });
    expect(ids.prompt?.promptText).toBe("hi<|im_end|>");
    expect(ids.prompt?.tokenCounts?.text).toBe(2);
    expect(await code(client.prepare({ promptTokenIds: [200000] }))).toBe(
      "INVALID_ARGUMENT: prompt_token_ids[0]: 200000 is outside the vocabulary (0..151665)",
    );
    expect(await code(client.prepare({ rawPrompt: "hi", messages: user([text("hi")]) as never }))).toBe(
      "INVALID_ARGUMENT: set exactly one of messages, raw_prompt or prompt_token_ids; the request sets messages and raw_prompt",
    );
  });

  it("passes deadlines through", async () => {
    const big = await sharp({ create: { width: 3000, height: 3000, channels: 3, background: "#123456" } })
      .jpeg()
      .toBuffer();
    const got = await code(client.prepare({ messages: user([image(big)]) as never }, { deadline: 5 }));
    expect(got).toMatch(/^DEADLINE_EXCEEDED/);
    // The pool keeps working afterwards.
    const ok = await client.prepare({ messages: user([text("hi")]) as never });
    expect(ok.prompt?.tokenCounts?.total).toBe(17);
  });
});
