/**
 * The browser scenario of the web chat page (issue 10), usable against any server that serves the
 * page at `/` and the OpenAI-compatible API under `/v1`: the in-test fake of web-chat.test.ts, or
 * the real stack (edge + preprocess + gpu-service with tiny-a).
 *
 *   launchChromium() ── page ── runWebChatScenario(page, baseUrl, media)
 *                                 1. attach a PNG, ask, watch the answer stream in
 *                                 2. ask for a long answer, press Stop mid-way
 *                                 3. attach a video, ask, read the token counts
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { type BrowserContext, chromium, type Locator, type Page } from "playwright-core";

/** Debian's chromium (installed by scripts/ensure-chromium.sh). */
export const CHROMIUM_PATH = "/usr/bin/chromium";

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A headless Chromium with a fresh profile; `close()` also deletes the profile. */
export async function launchChromium(): Promise<{ context: BrowserContext; close: () => Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), "web-chat-profile-"));
  // NOTE: playwright refuses --user-data-dir in args; a persistent context passes it for us.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A `width`×`height` RGB PNG with a colour gradient (no image library needed). */
export function makePng(width: number, height: number): Buffer {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1); // filter byte 0, then [width, 3] RGB
    for (let x = 0; x < width; x++) {
      raw[row + 1 + x * 3] = (x * 255) / Math.max(1, width - 1);
      raw[row + 2 + x * 3] = (y * 255) / Math.max(1, height - 1);
      raw[row + 3 + x * 3] = 128;
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit, truecolour, deflate, no filter, no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", header),
    pngChunk("IDAT", deflateSync(raw)),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

function crc32(bytes: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A short MP4 (test pattern, 160x120, `seconds` long at 4 fps) made with the project's ffmpeg binary. */
export function makeMp4(seconds: number): Buffer {
  const ffmpeg = (createRequire(import.meta.url)("@ffmpeg-installer/ffmpeg") as { path: string }).path;
  const dir = mkdtempSync(join(tmpdir(), "web-chat-video-"));
  try {
    const out = join(dir, "clip.mp4");
    execFileSync(ffmpeg, [
      ...[
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        `testsrc=size=160x120:rate=4`,
        "-t",
        String(seconds),
      ],
      ...["-pix_fmt", "yuv420p", "-c:v", "libx264", "-movflags", "+faststart", out],
    ]);
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What the scenario saw, for callers that know the backend and can check more. */
export interface ScenarioResult {
  imageAnswer: string;
  /** Distinct lengths the first answer's text went through while streaming (more than 2 = streamed). */
  imageAnswerLengths: number[];
  imageStats: Record<string, string>;
  stoppedAnswer: string;
  videoStats: Record<string, string>;
}

/** Media the scenario uploads. */
export interface ScenarioMedia {
  png: Buffer;
  mp4: Buffer;
}

/** What one answer shows once it has finished streaming. */
export interface ShownAnswer {
  text: string;
  /** data-stat key -> text, e.g. `image_tokens` -> "image 64". */
  stats: Record<string, string>;
  note: string | null;
  error: string | null;
}

/** Waits for `answer` (an `article.msg-assistant`) to finish streaming and reads it. */
export async function finished(answer: Locator): Promise<ShownAnswer> {
  await answer.and(answer.page().locator('[aria-busy="false"]')).waitFor({ timeout: 120_000 });
  const text = (await answer.locator(".text").textContent()) ?? "";
  const stats: Record<string, string> = {};
  for (const stat of await answer.locator("[data-stat]").all()) {
    stats[(await stat.getAttribute("data-stat")) ?? ""] = (await stat.textContent()) ?? "";
  }
  const error = (await answer.locator(".error").count()) > 0 ? await answer.locator(".error").textContent() : null;
  const note = (await answer.locator(".note").count()) > 0 ? await answer.locator(".note").textContent() : null;
  return { text, stats, note, error };
}

/** Records every length the last answer's text reaches, until {@link takeLengths} is called. */
async function watchLastAnswer(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { __lengths: number[]; __observer?: MutationObserver };
    w.__lengths = [];
    w.__observer?.disconnect();
    w.__observer = new MutationObserver(() => {
      const texts = document.querySelectorAll("article.msg-assistant .text");
      const length = texts[texts.length - 1]?.textContent?.length ?? 0;
      if (w.__lengths.at(-1) !== length) w.__lengths.push(length);
    });
    w.__observer.observe(document.getElementById("conversation") as HTMLElement, {
      subtree: true,
      childList: true,
      characterData: true,
    });
  });
}

async function takeLengths(page: Page): Promise<number[]> {
  return page.evaluate(() => {
    const w = window as unknown as { __lengths: number[]; __observer?: MutationObserver };
    w.__observer?.disconnect();
    return w.__lengths;
  });
}

/** Sets a number field of the settings panel (opening the panel on narrow screens). */
export async function setSetting(page: Page, label: string, value: string): Promise<void> {
  const details = page.locator("#settings");
  if ((await details.getAttribute("open")) === null) await page.locator("#settings > summary").click();
  await page.getByLabel(label, { exact: true }).fill(value);
}

/** Attaches files through the file picker, asks `question`, presses Enter and returns the answer's locator. */
export async function ask(
  page: Page,
  question: string,
  files: { name: string; mimeType: string; buffer: Buffer }[] = [],
): Promise<Locator> {
  if (files.length > 0) {
    const chooser = page.waitForEvent("filechooser");
    await page.getByRole("button", { name: "Attach" }).click();
    await (await chooser).setFiles(files);
    await page
      .locator("#pending li")
      .nth(files.length - 1)
      .waitFor();
  }
  const answers = page.locator("article.msg-assistant");
  const index = await answers.count();
  await page.getByLabel("Message", { exact: true }).fill(question);
  await page.getByLabel("Message", { exact: true }).press("Enter");
  return answers.nth(index);
}

/**
 * Runs the acceptance scenario against `baseUrl` and checks what holds for any backend:
 * an answer streams in pieces, shows image token counts, Stop ends a long answer early,
 * and a video's token counts show. Returns what it saw for backend-specific checks.
 */
export async function runWebChatScenario(page: Page, baseUrl: string, media: ScenarioMedia): Promise<ScenarioResult> {
  const failures: string[] = [];
  const check = (ok: boolean, what: string): void => {
    if (!ok) failures.push(what);
  };
  await page.goto(baseUrl);
  await page.locator("#model-status").filter({ hasNotText: "Connecting" }).waitFor();

  // 1. A PNG and a question: the answer streams in and shows its token counts.
  await setSetting(page, "Max tokens", "48");
  await watchLastAnswer(page);
  const firstAnswer = await ask(page, "What is in this picture?", [
    { name: "gradient.png", mimeType: "image/png", buffer: media.png },
  ]);
  await page.locator("article.msg-user img[alt='gradient.png']").waitFor();
  const first = await finished(firstAnswer);
  const lengths = await takeLengths(page);
  check(first.error === null, `first answer failed: ${first.error}`);
  check(first.text.length > 0, "first answer is empty");
  check(lengths.filter((n) => n > 0).length >= 3, `answer did not stream (lengths ${lengths.join(",")})`);
  check(
    Number(/\d+/.exec(first.stats.image_tokens ?? "")?.[0] ?? 0) > 0,
    `no image tokens: ${JSON.stringify(first.stats)}`,
  );
  check("ttft" in first.stats, "no time to first token");

  // 2. A long answer, stopped as soon as some text arrived.
  await setSetting(page, "Max tokens", "512");
  const long = await ask(page, "Describe the picture in great detail.");
  await long.locator(".text").filter({ hasText: /\S/ }).waitFor({ timeout: 120_000 });
  await page.getByRole("button", { name: "Stop" }).click();
  const stopped = await finished(long);
  check(stopped.note === "Stopped", `stop note is ${stopped.note}`);
  check(stopped.error === null, `stopped answer shows an error: ${stopped.error}`);
  check(await page.getByRole("button", { name: "Send" }).isEnabled(), "Send stays disabled after Stop");

  // 3. A video: its token counts show.
  await setSetting(page, "Max tokens", "16");
  const video = await finished(
    await ask(page, "What happens in this video?", [{ name: "clip.mp4", mimeType: "video/mp4", buffer: media.mp4 }]),
  );
  check(video.error === null, `video answer failed: ${video.error}`);
  check(
    Number(/\d+/.exec(video.stats.video_tokens ?? "")?.[0] ?? 0) > 0,
    `no video tokens: ${JSON.stringify(video.stats)}`,
  );

  if (failures.length > 0) throw new Error(`web chat scenario failed:\n- ${failures.join("\n- ")}`);
  return {
    imageAnswer: first.text,
    imageAnswerLengths: lengths,
    imageStats: first.stats,
    stoppedAnswer: stopped.text,
    videoStats: video.stats,
  };
}
