/**
 * Regenerates docs/web-chat.png and docs/web-chat-mobile.png from the REAL stack (tiny-a): starts it,
 * runs the browser scenario (image question, a stopped answer, a video), and screenshots the page.
 *
 *   node --import tsx scripts/screenshot-web.ts
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startStack } from "../test/helpers/stack";
import { launchChromium, makeMp4, runWebChatScenario } from "../test/web-chat-scenario";

const root = join(import.meta.dirname, "..");
const stack = await startStack();
const browser = await launchChromium();
try {
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 1280, height: 960 });
  const png = readFileSync(join(root, "../shared/golden/images/img_640x480.png"));
  await runWebChatScenario(page, `${stack.edgeUrl}/`, { png, mp4: makeMp4(2) });
  await page.screenshot({ path: join(root, "docs/web-chat.png") });
  await page.setViewportSize({ width: 320, height: 700 });
  await page.screenshot({ path: join(root, "docs/web-chat-mobile.png") });
  console.log("wrote docs/web-chat.png and docs/web-chat-mobile.png");
} finally {
  await browser.close();
  await stack.stop();
}
