import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMediaFetcher, isNonPublicAddress } from "./fetch-media";
import { failure } from "./testing/fixtures";

describe("media URL fetching", () => {
  const body = Buffer.alloc(5000, 7);
  let server: Server;
  let port = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === "/img") res.writeHead(200, { "content-length": body.length }).end(body);
      else if (req.url === "/chunked") {
        res.writeHead(200);
        res.write(body);
        res.end(body);
      } else if (req.url === "/redirect") res.writeHead(302, { location: "/img" }).end();
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const opts = { timeoutMs: 5000, maxBytes: 1_000_000 };

  it("refuses loopback and private addresses unless MEDIA_URL_ALLOW allows them", async () => {
    const deny = createMediaFetcher({ ...opts, allow: [] });
    const e = await failure(deny(`http://127.0.0.1:${port}/img`, "image.url", 1e6));
    expect([e.kind, e.message]).toEqual([
      "invalid_argument",
      "image.url: refusing to fetch 127.0.0.1 (127.0.0.1 is not a public address; see MEDIA_URL_ALLOW)",
    ]);
    // Host names are resolved and every address is checked.
    const e2 = await failure(deny(`http://localhost:${port}/img`, "image.url", 1e6));
    expect(e2.message).toMatch(/^image\.url: refusing to fetch localhost \((127\.0\.0\.1|::1) is not a public address/);
    const cidr = createMediaFetcher({ ...opts, allow: ["127.0.0.0/8", "::1/128"] });
    expect(Buffer.from(await cidr(`http://127.0.0.1:${port}/img`, "image.url", 1e6))).toEqual(body);
    const host = createMediaFetcher({ ...opts, allow: ["localhost"] });
    expect((await host(`http://localhost:${port}/redirect`, "image.url", 1e6)).length).toBe(5000);
  });

  it("caps the size, reports HTTP errors and odd schemes", async () => {
    const f = createMediaFetcher({ ...opts, allow: ["127.0.0.1"] });
    const big = await failure(f(`http://127.0.0.1:${port}/img`, "image.url", 100));
    expect([big.kind, big.message]).toEqual([
      "invalid_argument",
      "image.url: the response has 5000 bytes, over the limit of 100",
    ]);
    const chunked = await failure(f(`http://127.0.0.1:${port}/chunked`, "image.url", 6000));
    expect(chunked.message).toBe("image.url: the response is over the limit of 6000 bytes");
    const missing = await failure(f(`http://127.0.0.1:${port}/nope`, "image.url", 1e6));
    expect(missing.message).toBe(`image.url: fetching http://127.0.0.1:${port}/nope returned HTTP 404`);
    const ftp = await failure(f("ftp://example.com/x", "image.url", 1e6));
    expect(ftp.message).toBe("image.url: URL scheme ftp: is not supported (http, https or data)");
    expect(Buffer.from(await f("data:image/png;base64,AAEC", "image.url", 10))).toEqual(Buffer.from([0, 1, 2]));
  });

  it("classifies addresses", () => {
    const nonPublic = [
      "10.1.2.3",
      "172.16.0.1",
      "192.168.1.1",
      "169.254.169.254",
      "127.0.0.1",
      "0.0.0.0",
      "100.64.0.1",
    ];
    const v6 = ["::1", "::", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"];
    // IPv4 carried in IPv6 reaches the IPv4 address; site-local fec0::/10 and Teredo are not public.
    const embedded = [
      "::ffff:7f00:1", // mapped, hex form
      "::ffff:0:a9fe:a9fe", // SIIT-translated 169.254.169.254
      "::127.0.0.1", // IPv4-compatible
      "::a00:1",
      "64:ff9b::127.0.0.1", // NAT64
      "64:ff9b::a9fe:a9fe",
      "64:ff9b:1::1", // local-use NAT64
      "2002:7f00:1::1", // 6to4 of 127.0.0.1
      "2002:c0a8:101::", // 6to4 of 192.168.1.1
      "fec0::1",
      "feff::1",
      "2001:0:4136:e378::1", // Teredo
    ];
    for (const a of [...nonPublic, ...v6, ...embedded]) expect([a, isNonPublicAddress(a)]).toEqual([a, true]);
    for (const a of [
      "8.8.8.8",
      "1.1.1.1",
      "2606:4700:4700::1111",
      "::ffff:8.8.8.8",
      "64:ff9b::808:808",
      "2002:808:808::1",
    ]) {
      expect([a, isNonPublicAddress(a)]).toEqual([a, false]);
    }
  });
});
