/**
 * Hardening against untrusted input, on the real stack (three processes on loopback, tiny-a): each block is
 * one class of issue 13 and fails without its fix. Shutdown and supervision are in ./shutdown.test.ts.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createRequire } from "node:module";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chat } from "../helpers/sse";
import { type Stack, startStack, stopStackChecked } from "../helpers/stack";
import { makeMp4 } from "../web-chat-scenario";

let stack: Stack;
let bait: Server;
let baitHits: string[] = [];
let baitPort = 0;
let startLog = "";

type ErrorBody = { error: { message: string; type: string; param: string | null; code: number } };

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${stack.edgeUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(120_000),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, json: json as ErrorBody & Record<string, unknown> };
}

const user = (content: unknown) => ({ messages: [{ role: "user", content }], max_tokens: 2 });
const videoPart = (bytes: Uint8Array, mime = "video/mp4") => ({
  type: "video_url",
  video_url: { url: `data:${mime};base64,${Buffer.from(bytes).toString("base64")}` },
});

/** The edge still routes to its replica: /health is 200 and a plain request completes. */
async function expectHealthy(): Promise<void> {
  const health = await fetch(`${stack.edgeUrl}/health`);
  expect(health.status).toBe(200);
  const ok = await post("/v1/chat/completions", user("hi"));
  expect(ok.status).toBe(200);
  expect(stack.edge.output()).not.toMatch(/gpu-service health changed/);
}

beforeAll(async () => {
  bait = createServer((req, res) => {
    baitHits.push(req.url ?? "");
    res.end("#EXTM3U\n");
  });
  await new Promise<void>((r) => bait.listen(0, "127.0.0.1", r));
  baitPort = (bait.address() as { port: number }).port;
  stack = await startStack({
    preprocessEnv: {
      MAX_IMAGE_PIXELS: "10000",
      MAX_VIDEO_FRAME_PIXELS: "30000",
      MAX_VIDEO_DURATION_S: "2",
      MEDIA_URL_ALLOW: "",
      LOG_LEVEL: "info",
    },
    edgeEnv: { GPU_POLL_INTERVAL_MS: "200", LOG_LEVEL: "warn" },
  });
  startLog = stack.preprocess.output();
});

afterAll(async () => {
  await stopStackChecked(stack);
  await new Promise((r) => bait.close(r));
});

describe("1. uploaded video never makes the server read anything but the upload", () => {
  it("refuses playlists, manifests and scripts by their bytes, with a 400 naming the part; nothing is fetched or read", async () => {
    baitHits = [];
    const hls = `#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile:///etc/hostname\n#EXTINF:2,\nhttp://127.0.0.1:${baitPort}/seg.ts\n#EXT-X-ENDLIST\n`;
    const dash = `<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT2S"><Period><AdaptationSet mimeType="video/mp4"><Representation id="1" bandwidth="1000"><BaseURL>http://127.0.0.1:${baitPort}/v.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>`;
    const concat = `ffconcat version 1.0\nfile 'http://127.0.0.1:${baitPort}/a.mp4'\nfile '/etc/hostname'\n`;
    for (const text of [hls, dash, concat]) {
      const r = await post(
        "/v1/chat/completions",
        user([videoPart(new TextEncoder().encode(text)), { type: "text", text: "?" }]),
      );
      expect(r.status).toBe(400);
      expect(r.json.error.param).toBe("messages[0].content[0].video_url");
      expect(r.json.error.message).toMatch(/not a supported video container/);
    }
    expect(baitHits).toEqual([]);
  });

  it("still decodes a real MP4", async () => {
    const r = await post("/v1/chat/completions", user([videoPart(makeMp4(1)), { type: "text", text: "?" }]));
    expect(r.status).toBe(200);
  });

  it("logs which ffmpeg binary and version it uses at start", () => {
    const line = startLog.split("\n").find((l) => l.includes('"msg":"ffmpeg found"'));
    expect(line).toBeDefined();
    const rec = JSON.parse(line as string) as { ffmpeg: string; version: string };
    expect(rec.ffmpeg).toMatch(/ffmpeg$/);
    expect(rec.version).toMatch(/\S/);
    expect(rec.version).not.toMatch(/^unknown/);
  });
});

describe("2. decode cost is bounded by what is sampled", () => {
  it("caps video frame pixels apart from still images, before decoding a frame", async () => {
    // 160x120 frames pass the video cap (30,000) though they are over the still-image cap (10,000)...
    expect((await post("/v1/chat/completions", user([videoPart(makeMp4(1))]))).status).toBe(200);
    // ...and 400x300 frames do not.
    const ffmpeg = (createRequire(import.meta.url)("@ffmpeg-installer/ffmpeg") as { path: string }).path;
    const big = execFileSync(ffmpeg, [
      ...["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=400x300:rate=4", "-t", "1"],
      ...["-c:v", "mpeg4", "-f", "matroska", "pipe:1"],
    ]);
    const r = await post("/v1/chat/completions", user([videoPart(big, "video/x-matroska")]));
    expect([r.status, r.json.error.param]).toEqual([400, "messages[0].content[0].video_url"]);
    expect(r.json.error.message).toMatch(/frames of 400x300 are over the limit of 30000 pixels/);
  });
});

describe("3. every integer has its range; no client error changes a replica's health", () => {
  it("answers 400 naming the field for values past their wire type, and the replica stays healthy", async () => {
    const cases: [string, unknown, string][] = [
      ["/v1/chat/completions", { ...user("hi"), priority: 1e15 }, "priority"],
      ["/v1/chat/completions", { ...user("hi"), top_k: 3e9 }, "top_k"],
      ["/v1/chat/completions", { ...user("hi"), stop_token_ids: [5e9] }, "stop_token_ids[0]"],
      ["/v1/chat/completions", { ...user("hi"), stop_token_ids: Array(1000).fill(1) }, "stop_token_ids"],
      ["/v1/chat/completions", { ...user("hi"), max_tokens: 5e9 }, "max_tokens"],
      ["/v1/completions", { prompt: [1, 5e9], max_tokens: 2 }, "prompt[1]"],
      ["/detokenize", { tokens: [5e9] }, "tokens[0]"],
    ];
    for (let round = 0; round < 3; round++) {
      for (const [path, body, param] of cases) {
        const r = await post(path, body);
        expect([path, param, r.status, r.json.error.param]).toEqual([path, param, 400, param]);
      }
    }
    await expectHealthy();
  });
});

describe("4. huge text does not freeze a service", () => {
  it("refuses 1 MiB of text before tokenizing while a small request is served", async () => {
    const huge = post("/v1/chat/completions", user("x".repeat(1 << 20)));
    const noSpaces = post("/v1/completions", { prompt: "a".repeat(300_000), max_tokens: 2 });
    const small = post("/v1/chat/completions", user("hello"));
    const [h, n, s] = await Promise.all([huge, noSpaces, small]);
    expect([h.status, h.json.error.param]).toEqual([400, "messages[0].content[0].text"]);
    expect(h.json.error.message).toMatch(/characters of text, over the limit of \d+/);
    expect(n.status).toBe(400);
    expect(n.json.error.param).toBe("prompt");
    expect(n.json.error.message).toMatch(/^prompt: prompt has more than \d+ tokens/);
    expect(s.status).toBe(200);
    await expectHealthy();
  });
});

describe("5. health reflects health", () => {
  it("keeps a busy replica healthy: 32 concurrent streams, no health change, no 503", {
    timeout: 400_000,
  }, async () => {
    const calls = Array.from(
      { length: 32 },
      (_, i) =>
        chat(stack.edgeUrl, { ...user(`stream ${i}`), max_tokens: 24, ignore_eos: true, stream: true }, 380_000).result,
    );
    const results = await Promise.all(calls);
    expect(results.map((r) => r.status).filter((s) => s !== 200)).toEqual([]);
    expect(results.filter((r) => r.error !== undefined)).toEqual([]);
    await expectHealthy();
  });
});

describe("6. limits are 4xx that clients do not retry, and errors leak nothing", () => {
  it("answers an image over the pixel limit and a too-long video with 400 naming the part, no Retry-After", async () => {
    const { default: sharp } = await import("sharp");
    const png = await sharp({ create: { width: 200, height: 200, channels: 3, background: "#808080" } })
      .png()
      .toBuffer();
    const img = await post(
      "/v1/chat/completions",
      user([{ type: "image_url", image_url: { url: `data:image/png;base64,${png.toString("base64")}` } }]),
    );
    expect([img.status, img.json.error.param, img.headers.get("retry-after")]).toEqual([
      400,
      "messages[0].content[0].image_url",
      null,
    ]);
    const long = await post("/v1/chat/completions", user([videoPart(makeMp4(4))]));
    expect([long.status, long.json.error.param, long.headers.get("retry-after")]).toEqual([
      400,
      "messages[0].content[0].video_url",
      null,
    ]);
    expect(long.json.error.message).toMatch(/over the limit of 2 s/);
    const fps = await post("/v1/chat/completions", { ...user("hi"), mm_processor_kwargs: { fps: 50 } });
    expect(fps.status).toBe(400);
    expect(fps.json.error.message).not.toMatch(/options\./);
  });

  it("says a corrupt video is corrupt without ffmpeg's stderr, paths or parser internals", async () => {
    const mp4 = makeMp4(1);
    const broken = new Uint8Array(mp4);
    broken.fill(0xff, 40); // the ftyp box stays, everything after it is garbage
    const r = await post("/v1/chat/completions", user([videoPart(broken)]));
    expect(r.status).toBe(400);
    expect(r.json.error.message).not.toMatch(/ffmpeg|\/tmp|pipe:|moov|Invalid data|exit \d/i);
    const img = await post(
      "/v1/chat/completions",
      user([{ type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB" } }]),
    );
    expect(img.status).toBe(400);
    expect(img.json.error.message).not.toMatch(/vips|libpng|Input buffer/i);
  });
});

describe("7. one request's cost is what it counts for", () => {
  it("refuses 32 prompts x n=8 with a 400 naming n, and the stack serves the next caller", async () => {
    const r = await post("/v1/completions", { prompt: Array(32).fill("hi"), n: 8, max_tokens: 4 });
    expect([r.status, r.json.error.param]).toEqual([400, "n"]);
    expect(r.json.error.message).toMatch(/256 sequences .* over the limit of 32/);
    const ok = await post("/v1/completions", { prompt: Array(4).fill("hi"), n: 8, max_tokens: 2 });
    expect(ok.status).toBe(200);
    expect((ok.json as unknown as { choices: unknown[] }).choices).toHaveLength(32);
  });
});

describe("9. smaller holes", () => {
  it("accepts only application/json (415 for text/plain and forms)", async () => {
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]) {
      const r = await post("/v1/chat/completions", JSON.stringify(user("hi")), { "content-type": type });
      expect([type, r.status]).toEqual([type, 415]);
    }
  });

  it("binds the metrics ports to loopback", () => {
    const listening = readFileSync("/proc/net/tcp", "utf8")
      .split("\n")
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[3] === "0A")
      .map((f) => f[1] as string);
    for (const port of [stack.preprocess.metricsPort, ...stack.gpus.map((g) => g.metricsPort)] as number[]) {
      const hex = port.toString(16).toUpperCase().padStart(4, "0");
      const binds = listening.filter((a) => a.endsWith(`:${hex}`));
      expect([port, binds]).toEqual([port, [`0100007F:${hex}`]]);
    }
  });

  it("refuses URLs whose address is IPv4 carried in IPv6 or site-local, fetching nothing", async () => {
    baitHits = [];
    for (const host of [
      "[::ffff:7f00:1]",
      "[::ffff:127.0.0.1]",
      "[64:ff9b::7f00:1]",
      "[2002:7f00:1::1]",
      "[fec0::1]",
    ]) {
      const r = await post(
        "/v1/chat/completions",
        user([{ type: "image_url", image_url: { url: `http://${host}:${baitPort}/x.png` } }]),
      );
      expect([host, r.status]).toEqual([host, 400]);
      expect(r.json.error.message).toMatch(/not a public address/);
    }
    expect(baitHits).toEqual([]);
  });

  it("keeps an idle keep-alive connection open longer than clients do (no 'other side closed')", async () => {
    const { port } = new URL(stack.edgeUrl);
    const socket = connect(Number(port), "127.0.0.1");
    let closedByServer = false;
    socket.on("end", () => {
      closedByServer = true;
    });
    const get = () =>
      new Promise<string>((resolve, reject) => {
        let buf = "";
        const onData = (d: Buffer) => {
          buf += d.toString();
          if (/\r\n\r\n[\s\S]*"status"/.test(buf)) {
            socket.off("data", onData);
            resolve(buf);
          }
        };
        socket.on("data", onData);
        socket.once("error", reject);
        socket.write("GET /health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
      });
    expect(await get()).toMatch(/^HTTP\/1.1 200/);
    // Node's default server timeout is 5 s; clients (undici 4 s) must always be the ones to close first.
    await new Promise((r) => setTimeout(r, 6500));
    expect(closedByServer).toBe(false);
    expect(await get()).toMatch(/^HTTP\/1.1 200/);
    socket.destroy();
  });
});
