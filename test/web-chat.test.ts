/**
 * The web chat page in headless Chromium (issue 10).
 *
 * The acceptance scenario runs against the real stack: preprocess + gpu-service + edge started here on
 * tiny-a (test/helpers/stack.ts), or the server at WEB_CHAT_BASE_URL when that is set.
 * Without WEB_CHAT_BASE_URL, the page is also served by registerWebPage on a Hono app whose /v1 routes
 * are a FAKE of the backend HTTP API (scripted SSE answers, recorded requests), so the page's behaviour
 * can be checked exactly: request bodies, stop -> server-side abort, errors, API key, settings, layout.
 * WEB_CHAT_SCREENSHOTS=1 also writes docs/web-chat.png and docs/web-chat-mobile.png.
 */
import { existsSync, mkdirSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { registerWebPage } from "../edge/src/web";
import { gpuMetric, scrape } from "./helpers/metrics";
import { type Stack, startStack, stopStackChecked } from "./helpers/stack";
import {
  ask,
  CHROMIUM_PATH,
  finished,
  launchChromium,
  makeMp4,
  makePng,
  runWebChatScenario,
  type ScenarioMedia,
  setSetting,
} from "./web-chat-scenario";

const realBaseUrl = process.env.WEB_CHAT_BASE_URL ?? "";
const screenshots = process.env.WEB_CHAT_SCREENSHOTS === "1";

// ---------------------------------------------------------------- the fake backend

type Json = Record<string, unknown>;
interface RecordedRequest {
  body: Json & { messages: { role: string; content: unknown }[] };
  authorization: string | null;
}

/** Scripted stand-in for the edge's /v1 API; answers depend on the last user text. */
class FakeOpenAi {
  readonly requests: RecordedRequest[] = [];
  aborted = 0;
  unauthorized = 0;
  apiKey: string | null = null;
  readonly app = new Hono();

  constructor() {
    registerWebPage(this.app);
    this.app.use("/v1/*", async (c, next) => {
      if (this.apiKey !== null && c.req.header("authorization") !== `Bearer ${this.apiKey}`) {
        this.unauthorized++;
        return c.json(
          { error: { message: "missing or invalid API key", type: "AuthenticationError", param: null, code: 401 } },
          401,
        );
      }
      await next();
    });
    this.app.get("/v1/models", (c) => c.json({ object: "list", data: [{ id: "tiny-a", object: "model" }] }));
    this.app.post("/v1/chat/completions", async (c) => {
      const body = (await c.req.json()) as RecordedRequest["body"];
      this.requests.push({ body, authorization: c.req.header("authorization") ?? null });
      const question = lastUserText(body);
      if (question.includes("fail before")) {
        return c.json(
          {
            error: {
              message: "messages[1].content[0].video_url: the video is 120 s long, over the 60 s limit",
              type: "BadRequestError",
              param: null,
              code: 400,
            },
          },
          400,
        );
      }
      const words = Math.min(Number(body.max_tokens ?? 16), 400);
      const usage = fakeUsage(body, words);
      return streamSSE(c, async (stream) => {
        let aborted = false;
        stream.onAbort(() => {
          aborted = true;
          this.aborted++;
        });
        const chunk = (delta: Json, finish: string | null = null) => ({
          id: "chatcmpl-fake",
          object: "chat.completion.chunk",
          created: 1,
          model: "tiny-a",
          choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
          usage: null,
        });
        await stream.writeSSE({ data: JSON.stringify(chunk({ role: "assistant", content: "" })) });
        for (let i = 0; i < words && !aborted; i++) {
          await stream.sleep(20);
          if (question.includes("fail during") && i === 3) {
            await stream.writeSSE({
              data: JSON.stringify({
                error: { message: "gpu-service went away", type: "ServiceUnavailable", code: 503 },
              }),
            });
            await stream.writeSSE({ data: "[DONE]" });
            return;
          }
          await stream.writeSSE({ data: JSON.stringify(chunk({ content: `w${i} ` })) });
        }
        if (aborted) return;
        await stream.writeSSE({ data: JSON.stringify(chunk({ content: "" }, words >= 400 ? "length" : "stop")) });
        await stream.writeSSE({ data: JSON.stringify({ ...chunk({}), choices: [], usage }) });
        await stream.writeSSE({ data: "[DONE]" });
      });
    });
  }
}

function lastUserText(body: RecordedRequest["body"]): string {
  const last = body.messages.at(-1);
  if (typeof last?.content === "string") return last.content;
  const parts = (last?.content ?? []) as { type: string; text?: string }[];
  return parts.map((p) => p.text ?? "").join(" ");
}

/** 64 tokens per image, 96 per video, 1 per word of text: exact numbers the page must show. */
function fakeUsage(body: RecordedRequest["body"], completion: number): Json {
  let text = 0;
  let image = 0;
  let video = 0;
  for (const m of body.messages) {
    const parts = typeof m.content === "string" ? [{ type: "text", text: m.content }] : (m.content as Json[]);
    for (const p of parts) {
      if (p.type === "image_url") image += 64;
      else if (p.type === "video_url") video += 96;
      else
        text += String(p.text ?? "")
          .split(/\s+/)
          .filter(Boolean).length;
    }
  }
  return {
    prompt_tokens: text + image + video,
    completion_tokens: completion,
    total_tokens: text + image + video + completion,
    prompt_tokens_details: { text_tokens: text, image_tokens: image, video_tokens: video, cached_tokens: 0 },
  };
}

// ---------------------------------------------------------------- tests

let browser: Awaited<ReturnType<typeof launchChromium>>;
let context: BrowserContext;
let media: ScenarioMedia;

beforeAll(async () => {
  if (!existsSync(CHROMIUM_PATH)) throw new Error(`${CHROMIUM_PATH} is missing: run scripts/ensure-chromium.sh`);
  browser = await launchChromium();
  context = browser.context;
  media = { png: makePng(64, 48), mp4: makeMp4(2) };
});

afterAll(async () => {
  await browser?.close();
});

describe("web chat page against the real stack", () => {
  let stack: Stack | undefined;
  let baseUrl = realBaseUrl;

  beforeAll(async () => {
    if (baseUrl !== "") return;
    stack = await startStack({ gpuReplicas: 1 });
    baseUrl = `${stack.edgeUrl}/`;
  });

  afterAll(async () => {
    await stopStackChecked(stack);
  });

  it("uploads a PNG, streams an answer, stops one, sends a video, shows token counts", async () => {
    const page = await context.newPage();
    const result = await runWebChatScenario(page, baseUrl, media);
    expect(result.imageAnswer.length).toBeGreaterThan(0);
    await page.close();
    if (!stack) return;
    // tiny-a: exact counts. The 64x48 PNG is one slice: <image_id>0</image_id><image> 64 </image> = 69 tokens;
    // the 2 s clip gives 2 frames (1 fps) of <image> 64 </image>.
    expect(result.imageStats.image_tokens).toBe("image 69");
    expect(result.imageStats.completion_tokens).toMatch(/^Answer ([1-9]|[1-3]\d|4[0-8]) tokens?$/);
    expect(result.videoStats.video_tokens).toBe("video 132");
    expect(result.videoStats.image_tokens).toBe("image 69"); // the earlier turn's PNG is sent again
    // Stop reached the gpu-service: the long answer ended there as aborted, not at its 512-token limit.
    const gpu = stack.gpus[0]?.metricsPort as number;
    await expect
      .poll(async () => gpuMetric(await scrape(gpu), "request_success", { finished_reason: "abort" }), {
        timeout: 30_000,
      })
      .toBe(1);
    expect(gpuMetric(await scrape(gpu), "num_requests_running")).toBe(0);
  });
});

describe.skipIf(realBaseUrl !== "")("web chat page against a fake backend API", () => {
  let fake: FakeOpenAi;
  let baseUrl: string;
  let close: () => Promise<void>;

  beforeAll(async () => {
    fake = new FakeOpenAi();
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const s = serve({ fetch: fake.app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(s));
    });
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    close = () => new Promise((resolve) => server.close(() => resolve()));
  });

  afterAll(async () => {
    await close?.();
  });

  const pageErrors: string[] = [];
  afterEach(() => {
    expect(pageErrors.splice(0)).toEqual([]);
  });

  async function newPage(width = 1280, height = 800): Promise<Page> {
    const page = await context.newPage();
    await page.setViewportSize({ width, height });
    page.on("pageerror", (err) => pageErrors.push(err.message));
    return page;
  }

  it("runs the acceptance scenario; requests carry media, history and settings; Stop aborts on the server", async () => {
    fake.requests.length = 0;
    fake.aborted = 0;
    const page = await newPage();
    const result = await runWebChatScenario(page, baseUrl, media);

    expect(result.imageAnswer).toBe(Array.from({ length: 48 }, (_, i) => `w${i} `).join(""));
    expect(result.imageStats).toEqual({
      prompt_tokens: "Prompt 69 tokens",
      text_tokens: "text 5",
      image_tokens: "image 64",
      video_tokens: "video 0",
      cached_tokens: "cached 0",
      completion_tokens: "Answer 48 tokens",
      ttft: expect.stringMatching(/^First token \d+ ms$|^First token \d+\.\d\d s$/),
      tokens_per_second: expect.stringMatching(/^\d+\.\d tokens\/s$/),
    });
    expect(fake.requests).toHaveLength(3);
    const [first, long, video] = fake.requests.map((r) => r.body);
    expect(first).toEqual({
      model: "tiny-a",
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: `data:image/png;base64,${media.png.toString("base64")}` } },
            { type: "text", text: "What is in this picture?" },
          ],
        },
      ],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 48,
      temperature: 0.7,
      top_p: 0.8,
      top_k: 100,
      repetition_penalty: 1.05,
    });
    expect(long?.max_tokens).toBe(512);
    // Stop: the fetch is aborted, the server sees the disconnect, the partial answer stays in history.
    await expect.poll(() => fake.aborted).toBe(1);
    expect(result.stoppedAnswer).toMatch(/^(w\d+ )+$/);
    expect(result.stoppedAnswer.length).toBeLessThan(Array.from({ length: 400 }, (_, i) => `w${i} `).join("").length);
    expect(video?.messages.map((m) => m.role)).toEqual(["user", "assistant", "user", "assistant", "user"]);
    expect(video?.messages[3]).toEqual({ role: "assistant", content: result.stoppedAnswer });
    expect(video?.messages[4]).toEqual({
      role: "user",
      content: [
        { type: "video_url", video_url: { url: `data:video/mp4;base64,${media.mp4.toString("base64")}` } },
        { type: "text", text: "What happens in this video?" },
      ],
    });
    expect(result.videoStats.video_tokens).toBe("video 96");
    expect(result.videoStats.image_tokens).toBe("image 64");

    // Thumbnails of both attachments are in the conversation.
    expect(await page.locator("article.msg-user img[alt='gradient.png']").count()).toBe(1);
    expect(await page.locator("article.msg-user video[aria-label='clip.mp4']").count()).toBe(1);

    if (screenshots) {
      const docs = join(import.meta.dirname, "..", "docs");
      mkdirSync(docs, { recursive: true });
      await page.setViewportSize({ width: 1280, height: 960 });
      await page.screenshot({ path: join(docs, "web-chat.png") });
      // As a phone shows it: settings folded, the end of the conversation above the composer.
      await page.setViewportSize({ width: 320, height: 720 });
      await page.evaluate(() => {
        (document.getElementById("settings") as HTMLDetailsElement).open = false;
        window.scrollTo(0, document.documentElement.scrollHeight);
      });
      await page.screenshot({ path: join(docs, "web-chat-mobile.png") });
    }
    await page.close();
  });

  it("beam search preset, slices, fps, frames and system prompt reach the request; bad settings are named", async () => {
    fake.requests.length = 0;
    const page = await newPage();
    await page.goto(baseUrl);
    await page.getByLabel("Beam search (3 beams)").check();
    expect(await page.getByLabel("Temperature", { exact: true }).isDisabled()).toBe(true);
    expect(await page.getByLabel("Repetition penalty").inputValue()).toBe("1.2");
    await setSetting(page, "Max slices", "2");
    await setSetting(page, "Video fps", "2");
    await setSetting(page, "Video max frames", "8");
    await setSetting(page, "Max tokens", "5");
    await page.getByLabel("System prompt").fill("Answer in one word.");
    const answer = await finished(await ask(page, "hi"));
    expect(answer.text).toBe("w0 w1 w2 w3 w4 ");
    expect(fake.requests.at(-1)?.body).toEqual({
      model: "tiny-a",
      messages: [
        { role: "system", content: "Answer in one word." },
        { role: "user", content: "hi" },
      ],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 5,
      repetition_penalty: 1.2,
      use_beam_search: true,
      n: 1,
      best_of: 3,
      mm_processor_kwargs: { max_slice_nums: 2, fps: 2, max_frames: 8 },
    });

    // Back to sampling restores the preset; an out-of-range value is named and nothing is sent.
    await page.getByLabel("Sampling", { exact: true }).check();
    expect(await page.getByLabel("Top k").inputValue()).toBe("100");
    await setSetting(page, "Temperature", "5");
    const sent = fake.requests.length;
    await page.getByLabel("Message", { exact: true }).fill("again");
    await page.getByRole("button", { name: "Send" }).click();
    await expect
      .poll(() => page.locator("#settings-error").textContent())
      .toBe("Temperature must be between 0 and 2, got 5");
    expect(fake.requests.length).toBe(sent);
    expect(await page.getByLabel("Temperature", { exact: true }).getAttribute("aria-invalid")).toBe("true");
    await page.close();
  });

  it("shows API errors in the conversation, regenerates, clears, and rejects unsupported files", async () => {
    fake.requests.length = 0;
    const page = await newPage();
    await page.goto(baseUrl);
    await setSetting(page, "Max tokens", "6");

    const before = await finished(await ask(page, "please fail before streaming"));
    expect(before.error).toBe("messages[1].content[0].video_url: the video is 120 s long, over the 60 s limit");
    const during = await finished(await ask(page, "please fail during streaming"));
    expect(during.text).toBe("w0 w1 w2 ");
    expect(during.error).toBe("gpu-service went away");

    // Failed exchanges are not sent again with later questions.
    await finished(await ask(page, "fine"));
    expect(fake.requests.at(-1)?.body.messages).toEqual([{ role: "user", content: "fine" }]);

    // Regenerate replaces the last answer with a new one for the same question.
    await page.getByRole("button", { name: "Regenerate" }).click();
    const again = await finished(page.locator("article.msg-assistant").last());
    expect(again.text).toBe("w0 w1 w2 w3 w4 w5 ");
    expect(await page.locator("article.msg").count()).toBe(6);
    expect(fake.requests.at(-1)?.body.messages).toEqual([{ role: "user", content: "fine" }]);

    await page.getByRole("button", { name: "Clear" }).click();
    expect(await page.locator("article.msg").count()).toBe(0);
    expect(await page.locator("#empty-hint").isVisible()).toBe(true);

    const chooser = page.waitForEvent("filechooser");
    await page.getByRole("button", { name: "Attach" }).click();
    await (await chooser).setFiles({ name: "notes.pdf", mimeType: "application/pdf", buffer: Buffer.from("%PDF-1.4") });
    await expect
      .poll(() => page.locator("#composer-error").textContent())
      .toBe('notes.pdf: unsupported file type "application/pdf" (attach an image or a video)');
    await page.close();
  });

  it("asks for an API key on 401, keeps it in sessionStorage only, and retries", async () => {
    fake.requests.length = 0;
    fake.unauthorized = 0;
    fake.apiKey = "sk-test";
    try {
      const page = await newPage();
      await page.goto(baseUrl);
      const dialog = page.getByRole("dialog", { name: "API key required" });
      await dialog.waitFor();
      await dialog.getByLabel("API key").fill("sk-test");
      await dialog.getByLabel("API key").press("Enter");
      await expect.poll(() => page.locator("#model-status").textContent()).toBe("Model: tiny-a");

      // The key is dropped (as a new tab would be): the chat request's 401 asks again, then retries.
      await page.evaluate(() => sessionStorage.clear());
      await setSetting(page, "Max tokens", "16");
      const pending = await ask(page, "hello");
      await dialog.waitFor();
      expect(await dialog.locator("#key-dialog-message").textContent()).toBe("missing or invalid API key");
      await dialog.getByLabel("API key").fill("sk-test");
      await dialog.getByRole("button", { name: "Use key" }).click();
      const answer = await finished(pending);
      expect(answer.error).toBeNull();
      expect(answer.text).toBe("w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 ");
      expect(fake.requests.map((r) => r.authorization)).toEqual(["Bearer sk-test"]);
      expect(fake.unauthorized).toBe(2); // GET /v1/models on load, then the first chat request
      expect(await page.evaluate(() => [sessionStorage.getItem("minicpmv.apiKey"), localStorage.length])).toEqual([
        "sk-test",
        0,
      ]);
      await page.close();
    } finally {
      fake.apiKey = null;
    }
  });

  it("attaches by paste and drop, works from the keyboard, and fits 320 px", async () => {
    const page = await newPage(320, 640);
    await page.goto(baseUrl);
    expect(await page.locator("#settings").getAttribute("open")).toBeNull();
    const png = media.png.toString("base64");
    await page.evaluate((b64) => {
      const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
      const pasted = new DataTransfer();
      pasted.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
      const prompt = document.getElementById("prompt") as HTMLTextAreaElement;
      prompt.dispatchEvent(new ClipboardEvent("paste", { clipboardData: pasted, bubbles: true, cancelable: true }));
      const dropped = new DataTransfer();
      dropped.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
      document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: dropped, bubbles: true, cancelable: true }));
    }, png);
    await expect
      .poll(() => page.locator("#pending img").evaluateAll((imgs) => imgs.map((i) => i.getAttribute("alt"))))
      .toEqual(["pasted.png", "dropped.png"]);
    await page.getByRole("button", { name: "Remove pasted.png" }).click();
    expect(await page.locator("#pending li").count()).toBe(1);

    // Keyboard only: type, Enter sends, Escape stops the stream.
    await setSetting(page, "Max tokens", "400");
    await page.getByLabel("Message", { exact: true }).focus();
    await page.keyboard.type("a long one");
    await page.keyboard.press("Enter");
    const answer = page.locator("article.msg-assistant").last();
    await answer.locator(".text").filter({ hasText: /w3 / }).waitFor();
    await page.keyboard.press("Escape");
    expect((await finished(answer)).note).toBe("Stopped");
    expect(await page.locator("article.msg-user img[alt='dropped.png']").count()).toBe(1);

    // Every control has an accessible name, and nothing overflows a 320 px screen.
    const unnamed = await page.evaluate(() =>
      Array.from(document.querySelectorAll("button, input:not([type=file]), textarea"))
        .filter((el) => {
          const id = el.id;
          const label = id !== "" && document.querySelector(`label[for="${id}"]`) !== null;
          return (
            !label && el.closest("label") === null && !el.getAttribute("aria-label") && el.textContent?.trim() === ""
          );
        })
        .map((el) => el.outerHTML),
    );
    expect(unnamed).toEqual([]);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(320);
    await page.close();
  });
});
