/**
 * Test support: a fake Hugging Face Hub on 127.0.0.1 (node:http, ephemeral ports), speaking the part of
 * the Hub's protocol `downloadFromHub` uses, with a second server standing in for the LFS CDN.
 *
 *   hub  GET /api/models/{org}/{name}/revision/{rev}  -> { id, sha, siblings: [{ rfilename }] }
 *                                                         (`?blobs=true`: + blobId, size, lfs { sha256, size })
 *        GET /{org}/{name}/resolve/{rev}/{file}        -> 200 small file (Range supported), or
 *                                                         302 to the CDN + x-linked-etag "<sha256>", x-linked-size
 *   cdn  GET /lfs/{sha256}                              -> 200 / 206 (Range), no auth
 *
 * Errors carry X-Error-Code like the real Hub (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo).
 * Every request is logged; `faults` cut, stall or corrupt the bytes of one file.
 */

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readFile, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Transform } from "node:stream";

/** One repository: file name -> path of the content on disk. */
export interface FakeRepo {
  /** 40-hex commit that every listed revision resolves to (mutable: tests move it). */
  sha: string;
  files: Record<string, string>;
  /** Branch and tag names that resolve (default `["main"]`). */
  revisions?: string[];
  /** When set, every hub request must carry `Authorization: Bearer <token>` (a gated repository). */
  token?: string;
}

/** One logged request. */
export interface FakeHubRequest {
  server: "hub" | "cdn";
  path: string;
  /** The file served (resolve and CDN requests), else null. */
  file: string | null;
  range: string | null;
  authorization: string | null;
  status: number;
}

/** Faults applied to the bytes of one file (on whichever server sends them). */
export interface FakeHubFaults {
  /** The next response for `file` sends bytes up to offset `after`, then the connection is cut (once). */
  cut?: { file: string; after: number };
  /** Responses for `file` send bytes up to offset `after` and then hang until the client goes away. */
  stall?: { file: string; after: number };
  /** The byte at `offset` of `file` is flipped in every response. */
  corrupt?: { file: string; offset: number };
}

interface Blob {
  path: string;
  size: number;
  sha256: string;
  /** Git blob id: sha1 of "blob <size>\0" + content (of the LFS pointer for LFS files, as on the Hub). */
  blobId: string;
  lfs: boolean;
}

/** The git blob id of `content`. */
function gitBlobId(content: Buffer): string {
  return createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
}

/** Files of this size or more, and all safetensors, are served as LFS files (through the CDN). */
const LFS_MIN_BYTES = 1 << 20;

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

export class FakeHub {
  readonly log: FakeHubRequest[] = [];
  faults: FakeHubFaults = {};
  /** Responses currently stalled; each resolves when its connection closes. */
  readonly stalled: Promise<void>[] = [];
  private readonly blobs = new Map<string, Blob>();
  private readonly hub: Server;
  private readonly cdn: Server;
  endpoint = "";
  cdnOrigin = "";

  private constructor(readonly repos: Record<string, FakeRepo>) {
    this.hub = createServer((req, res) => void this.onHub(req, res));
    this.cdn = createServer((req, res) => void this.onCdn(req, res));
  }

  /** Starts both servers on ephemeral ports of 127.0.0.1. */
  static async start(repos: Record<string, FakeRepo>): Promise<FakeHub> {
    const hub = new FakeHub(repos);
    for (const repo of Object.values(repos)) {
      for (const path of Object.values(repo.files)) {
        if (hub.blobs.has(path)) continue;
        const size = (await stat(path)).size;
        const sha256 = await sha256File(path);
        const lfs = path.endsWith(".safetensors") || size >= LFS_MIN_BYTES;
        const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
        const blobId = gitBlobId(lfs ? Buffer.from(pointer) : await readFile(path));
        hub.blobs.set(path, { path, size, sha256, blobId, lfs });
      }
    }
    hub.endpoint = `http://127.0.0.1:${await listen(hub.hub)}`;
    hub.cdnOrigin = `http://127.0.0.1:${await listen(hub.cdn)}`;
    return hub;
  }

  /** Requests logged since `from` (an earlier `log.length`). */
  since(from: number): FakeHubRequest[] {
    return this.log.slice(from);
  }

  async close(): Promise<void> {
    for (const s of [this.hub, this.cdn]) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  }

  private record(server: "hub" | "cdn", req: IncomingMessage, file: string | null, status: number): void {
    this.log.push({
      server,
      path: req.url ?? "",
      file,
      range: req.headers.range ?? null,
      authorization: req.headers.authorization ?? null,
      status,
    });
  }

  private fail(
    server: "hub" | "cdn",
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    code: string,
    msg: string,
  ): void {
    this.record(server, req, null, status);
    res.writeHead(status, { "content-type": "application/json", "x-error-code": code, "x-error-message": msg });
    res.end(JSON.stringify({ error: msg }));
  }

  private async onHub(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const m = api ?? resolve;
    if (!m) return this.fail("hub", req, res, 404, "NotFound", "no such route");
    const repoId = decodeURIComponent(m[1] as string);
    const revision = decodeURIComponent(m[2] as string);
    const repo = this.repos[repoId];
    if (!repo) return this.fail("hub", req, res, 404, "RepoNotFound", `Repository ${repoId} not found`);
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      return this.fail("hub", req, res, 401, "GatedRepo", `Access to ${repoId} is restricted`);
    }
    if (revision !== repo.sha && !(repo.revisions ?? ["main"]).includes(revision)) {
      return this.fail("hub", req, res, 404, "RevisionNotFound", `Invalid rev id: ${revision}`);
    }
    if (api) {
      this.record("hub", req, null, 200);
      res.writeHead(200, { "content-type": "application/json" });
      const blobs = url.searchParams.get("blobs") === "true";
      res.end(
        JSON.stringify({
          id: repoId,
          sha: repo.sha,
          siblings: Object.entries(repo.files).map(([rfilename, path]) => {
            if (!blobs) return { rfilename };
            const b = this.blobs.get(path) as Blob;
            return {
              rfilename,
              blobId: b.blobId,
              size: b.size,
              ...(b.lfs ? { lfs: { sha256: b.sha256, size: b.size, pointerSize: 130 } } : {}),
            };
          }),
        }),
      );
      return;
    }
    const file = decodeURIComponent(m[3] as string);
    const path = repo.files[file];
    if (!path) return this.fail("hub", req, res, 404, "EntryNotFound", `${file} does not exist`);
    const blob = this.blobs.get(path) as Blob;
    if (blob.lfs) {
      this.record("hub", req, file, 302);
      res.writeHead(302, {
        location: `${this.cdnOrigin}/lfs/${blob.sha256}?name=${encodeURIComponent(file)}`,
        "x-linked-etag": `"${blob.sha256}"`,
        "x-linked-size": String(blob.size),
        "x-repo-commit": repo.sha,
        etag: `"${blob.sha256}"`,
      });
      res.end();
      return;
    }
    await this.serve("hub", req, res, file, blob, { "x-repo-commit": repo.sha, etag: `"${blob.blobId}"` });
  }

  private async onCdn(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const m = /^\/lfs\/([0-9a-f]{64})$/.exec(url.pathname);
    const blob = m ? [...this.blobs.values()].find((b) => b.sha256 === m[1]) : undefined;
    if (!blob) return this.fail("cdn", req, res, 404, "NotFound", "no such object");
    await this.serve("cdn", req, res, url.searchParams.get("name") ?? "", blob, {});
  }

  /** Sends a file (or the requested range of it) with the active faults. */
  private async serve(
    server: "hub" | "cdn",
    req: IncomingMessage,
    res: ServerResponse,
    file: string,
    blob: Blob,
    headers: Record<string, string>,
  ): Promise<void> {
    let start = 0;
    const range = req.headers.range;
    if (range) {
      const r = /^bytes=(\d+)-$/.exec(range);
      if (!r || Number(r[1]) >= blob.size) {
        this.record(server, req, file, 416);
        res.writeHead(416, { "content-range": `bytes */${blob.size}` });
        res.end();
        return;
      }
      start = Number(r[1]);
    }
    const status = range ? 206 : 200;
    this.record(server, req, file, status);
    res.writeHead(status, {
      ...headers,
      "content-type": "application/octet-stream",
      "content-length": String(blob.size - start),
      ...(range ? { "content-range": `bytes ${start}-${blob.size - 1}/${blob.size}` } : {}),
    });
    const { cut, stall, corrupt } = this.faults;
    const flip = corrupt?.file === file ? corrupt.offset : -1;
    const cutAt = cut?.file === file ? cut.after : null;
    const stopAt = cutAt ?? (stall?.file === file ? stall.after : null);
    if (stopAt !== null) {
      if (cutAt !== null) {
        const { cut: _once, ...rest } = this.faults;
        this.faults = rest;
      }
      const bytes = await readRange(blob.path, start, Math.max(0, stopAt - start));
      if (flip >= start && flip < start + bytes.length) bytes[flip - start] ^= 0xff;
      if (cutAt !== null) {
        res.write(bytes, () => res.destroy());
      } else {
        this.stalled.push(new Promise((resolve) => res.once("close", () => resolve())));
        res.write(bytes);
      }
      return;
    }
    let offset = start;
    const flipper = new Transform({
      transform(chunk: Buffer, _enc, done) {
        if (flip >= offset && flip < offset + chunk.length) {
          chunk = Buffer.from(chunk);
          chunk[flip - offset] ^= 0xff;
        }
        offset += chunk.length;
        done(null, chunk);
      },
    });
    const stream = createReadStream(blob.path, { start });
    res.once("close", () => stream.destroy());
    stream.pipe(flipper).pipe(res);
  }
}

async function readRange(path: string, start: number, length: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, start);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
