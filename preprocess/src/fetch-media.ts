/**
 * Fetches media by URL with a timeout and a size cap, refusing private, loopback, link-local and other
 * non-public addresses unless `MEDIA_URL_ALLOW` allows them. Every address a host name resolves to is
 * checked, and the connection goes to a checked address (no DNS-rebinding window). Redirects are
 * followed by hand (at most 5), each hop checked again. `data:` URLs are decoded in place.
 */

import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import http from "node:http";
import https from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { abortError, invalid, overLimit, PreprocessError } from "./errors";

/** Settings of the fetcher. */
export interface FetchMediaOptions {
  /** `MEDIA_URL_ALLOW`: CIDRs ("10.0.0.0/8", "::1/128"), addresses or host names that may be fetched although private. */
  readonly allow: readonly string[];
  readonly timeoutMs: number;
  /** Largest response body; the caller may pass a smaller one per call. */
  readonly maxBytes: number;
  /** Largest number of redirects followed. */
  readonly maxRedirects?: number;
}

/** Fetches one URL; `field` names it in errors. */
export type MediaFetcher = (url: string, field: string, maxBytes: number, signal?: AbortSignal) => Promise<Uint8Array>;

const BLOCKED_V4 = [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const;
const BLOCKED_V6 = [
  ["::", 128],
  ["::1", 128],
  ["100::", 64],
  ["2001:db8::", 32],
  ["fc00::", 7],
  ["fe80::", 10],
  ["fec0::", 10], // site-local (deprecated, still routed inside some networks)
  ["ff00::", 8],
  ["2001::", 32], // Teredo: tunnels to an IPv4 address
  ["64:ff9b:1::", 48], // local-use NAT64
] as const;

function parseAllow(entries: readonly string[]): { list: BlockList; hosts: Set<string> } {
  const list = new BlockList();
  const hosts = new Set<string>();
  for (const raw of entries) {
    const e = raw.trim();
    if (!e) continue;
    const [addr, prefix] = e.split("/") as [string, string | undefined];
    const family = isIP(addr);
    if (family === 0) {
      if (prefix !== undefined) throw new Error(`MEDIA_URL_ALLOW: ${e} is not a valid CIDR`);
      hosts.add(addr.toLowerCase());
      continue;
    }
    const type = family === 4 ? "ipv4" : "ipv6";
    if (prefix === undefined) list.addAddress(addr, type);
    else {
      const bits = Number(prefix);
      if (!Number.isInteger(bits) || bits < 0 || bits > (family === 4 ? 32 : 128)) {
        throw new Error(`MEDIA_URL_ALLOW: ${e} has an invalid prefix length`);
      }
      list.addSubnet(addr, bits, type);
    }
  }
  return { list, hosts };
}

const blocked = new BlockList();
for (const [a, p] of BLOCKED_V4) blocked.addSubnet(a, p, "ipv4");
for (const [a, p] of BLOCKED_V6) blocked.addSubnet(a, p, "ipv6");

/** The 8 groups of an IPv6 address (a trailing dotted IPv4 becomes two groups). */
function ipv6Groups(address: string): number[] | null {
  let a = address.toLowerCase();
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (v4) {
    const [b0, b1, b2, b3] = v4.slice(1).map(Number) as [number, number, number, number];
    a = `${a.slice(0, v4.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head, tail, ...rest] = a.split("::");
  if (rest.length > 0) return null;
  const parse = (s: string | undefined) => (s ? s.split(":").map((g) => Number.parseInt(g, 16)) : []);
  const h = parse(head);
  const t = parse(tail);
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill(0), ...t];
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : null;
}

const v4Of = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;

/**
 * The IPv4 address an IPv6 address carries, for the forms that reach it: IPv4-mapped (::ffff:0:0/96, and
 * SIIT's ::ffff:0:0:0/96),
 * IPv4-compatible (::/96), NAT64 (64:ff9b::/96) and 6to4 (2002::/16). Null for any other address.
 */
export function embeddedIpv4(address: string): string | null {
  const g = ipv6Groups(address);
  if (!g) return null;
  const zero = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zero(0, 5) && (g[5] === 0xffff || g[5] === 0)) return v4Of(g[6] as number, g[7] as number);
  if (zero(0, 4) && g[4] === 0xffff && g[5] === 0) return v4Of(g[6] as number, g[7] as number); // SIIT
  if (g[0] === 0x64 && g[1] === 0xff9b && zero(2, 6)) return v4Of(g[6] as number, g[7] as number);
  if (g[0] === 0x2002) return v4Of(g[1] as number, g[2] as number);
  return null;
}

/** Whether `address` is outside the public internet (private, loopback, link-local, reserved). */
export function isNonPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  if (family === 4) return blocked.check(address, "ipv4");
  if (blocked.check(address, "ipv6")) return true;
  // NOTE: an IPv6 form that carries an IPv4 address reaches that address: it is as public as the address.
  const v4 = embeddedIpv4(address);
  return v4 !== null && (v4 === "0.0.0.0" || blocked.check(v4, "ipv4"));
}

function decodeDataUrl(url: string, field: string, maxBytes: number): Uint8Array {
  const comma = url.indexOf(",");
  if (comma < 0) throw invalid(`${field}: malformed data URL`);
  const meta = url.slice(5, comma);
  const body = url.slice(comma + 1);
  const bytes = meta.endsWith(";base64")
    ? Buffer.from(body, "base64")
    : Buffer.from(decodeURIComponent(body), "latin1");
  if (bytes.length > maxBytes) throw overLimit(`${field}: ${bytes.length} bytes is over the limit of ${maxBytes}`);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Creates the fetcher used for ImageInput.url and VideoInput.url. */
export function createMediaFetcher(opts: FetchMediaOptions): MediaFetcher {
  const allow = parseAllow(opts.allow);
  const maxRedirects = opts.maxRedirects ?? 5;
  const allowed = (address: string) => {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    const a = mapped ? (mapped[1] as string) : address;
    const family = isIP(a);
    return family !== 0 && allow.list.check(a, family === 4 ? "ipv4" : "ipv6");
  };
  const checkAddress = (host: string, address: string, field: string) => {
    if (isNonPublicAddress(address) && !allowed(address) && !allow.hosts.has(host.toLowerCase())) {
      throw invalid(`${field}: refusing to fetch ${host} (${address} is not a public address; see MEDIA_URL_ALLOW)`);
    }
  };

  return async (url, field, maxBytes, signal) => {
    const limit = Math.min(maxBytes, opts.maxBytes);
    if (url.startsWith("data:")) return decodeDataUrl(url, field, limit);
    const timeout = AbortSignal.timeout(opts.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let current = url;
    for (let hop = 0; hop <= maxRedirects; hop++) {
      let u: URL;
      try {
        u = new URL(current);
      } catch {
        throw invalid(`${field}: invalid URL ${JSON.stringify(current.slice(0, 200))}`);
      }
      if (u.protocol !== "http:" && u.protocol !== "https:") {
        throw invalid(`${field}: URL scheme ${u.protocol} is not supported (http, https or data)`);
      }
      const host = u.hostname.replace(/^\[|\]$/g, "");
      // Resolve every address, refuse if any is non-public, connect to a checked one.
      const lookup: LookupFunction = (hostname, options, cb) => {
        dnsLookup(hostname, { all: true, family: options.family ?? 0 }, (err, addrs: LookupAddress[]) => {
          if (err) return cb(err, "", 4);
          try {
            for (const a of addrs) checkAddress(host, a.address, field);
          } catch (e) {
            return cb(e as NodeJS.ErrnoException, "", 4);
          }
          const first = addrs[0] as LookupAddress;
          if (options.all) (cb as unknown as (e: null, a: LookupAddress[]) => void)(null, addrs);
          else cb(null, first.address, first.family);
        });
      };
      if (isIP(host)) checkAddress(host, host, field);
      const res = await request(u, lookup, combined, field, signal, timeout, opts.timeoutMs);
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location) {
        res.resume();
        current = new URL(res.headers.location, u).toString();
        continue;
      }
      if (status !== 200) {
        res.resume();
        throw invalid(`${field}: fetching ${u.origin}${u.pathname} returned HTTP ${status}`);
      }
      return await readBody(res, limit, field, combined, signal, opts.timeoutMs);
    }
    throw invalid(`${field}: more than ${maxRedirects} redirects`);
  };
}

function failure(
  err: unknown,
  field: string,
  signal: AbortSignal | undefined,
  timeout: AbortSignal,
  timeoutMs: number,
): PreprocessError {
  if (err instanceof PreprocessError) return err;
  if (signal?.aborted) return abortError(signal);
  if (timeout.aborted)
    return new PreprocessError("deadline_exceeded", `${field}: fetch took longer than ${timeoutMs} ms`);
  return new PreprocessError("invalid_argument", `${field}: the URL could not be fetched`, (err as Error).message);
}

function request(
  u: URL,
  lookup: LookupFunction,
  combined: AbortSignal,
  field: string,
  signal: AbortSignal | undefined,
  timeout: AbortSignal,
  timeoutMs: number,
): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const mod = u.protocol === "https:" ? https : http;
    const req = mod.get(u, { lookup, signal: combined, headers: { "user-agent": "minicpmv-preprocess" } }, resolve);
    req.on("error", (err) => reject(failure(err, field, signal, timeout, timeoutMs)));
    combined.addEventListener("abort", () => reject(failure(new Error("aborted"), field, signal, timeout, timeoutMs)), {
      once: true,
    });
  });
}

async function readBody(
  res: http.IncomingMessage,
  limit: number,
  field: string,
  combined: AbortSignal,
  signal: AbortSignal | undefined,
  timeoutMs: number,
): Promise<Uint8Array> {
  const declared = Number(res.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    res.destroy();
    throw overLimit(`${field}: the response has ${declared} bytes, over the limit of ${limit}`);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > limit) {
        res.destroy();
        throw overLimit(`${field}: the response is over the limit of ${limit} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    throw failure(err, field, signal, combined, timeoutMs);
  }
  const all = Buffer.concat(chunks, n);
  return new Uint8Array(all.buffer, all.byteOffset, all.byteLength);
}
