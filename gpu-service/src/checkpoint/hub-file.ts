/**
 * One file from the Hugging Face Hub: streamed to `<dest>.incomplete`, resumed with `Range`,
 * verified (sha256 when the Hub gives one, size), renamed into place.
 *
 *   GET {endpoint}/{repo}/resolve/{sha}/{file}   (Authorization only to the endpoint's origin)
 *     ├─ 200 small file ──────────────────────────────────────────────┐
 *     └─ 302 + x-linked-etag "<sha256>" + x-linked-size (LFS)          │
 *          └─ GET Location (CDN, no Authorization) ─ 200 / 206 ───────┤
 *                                                 <dest>.incomplete <─┘ --sha256, size--> rename -> <dest>
 */

import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { type FileHandle, open, rename, rm, stat } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import { HubError } from "./hub-error";

/** Progress of a Hub download, as reported to `onProgress`. */
export type HubProgress =
  /** Another process holds the directory's lock; this one waits. */
  | { event: "waiting"; dir: string; holder: string }
  /** The revision resolved to `commit`; these are the files to fetch. */
  | { event: "plan"; repo: string; commit: string; files: string[] }
  /**
   * One file: `start` (with `bytes` > 0 when resuming), `progress` (at most every 500 ms), `done`,
   * `skipped` (already complete), `retry` (after a network error or 5xx; `error` says which).
   */
  | {
      event: "start" | "progress" | "done" | "skipped" | "retry";
      file: string;
      bytes: number;
      total: number | null;
      attempt?: number;
      error?: string;
    };

/** How requests are made; shared by every file of one download. */
export interface HubFetchContext {
  /** Origin of the Hub endpoint: the only origin that gets the token. */
  hubOrigin: string;
  token: string | undefined;
  signal: AbortSignal;
  maxAttempts: number;
  retryDelayMs: number;
  idleTimeoutMs: number;
  onProgress: (p: HubProgress) => void;
}

/** A file as recorded once complete. */
export interface FileRecord {
  size: number;
  sha256: string;
}

const MAX_REDIRECTS = 10;
const PROGRESS_EVERY_MS = 500;

function abortedError(what: string, signal: AbortSignal): HubError {
  return new HubError("aborted", `${what}: download aborted`, false, { cause: signal.reason });
}

function describe(err: unknown): string {
  const e = err as Error & { cause?: { message?: string; code?: string } };
  const cause = e.cause?.code ?? e.cause?.message;
  return cause ? `${e.message} (${cause})` : String(e.message ?? err);
}

/**
 * An AbortController that follows `parent` through a plain listener that `dispose()` removes, so
 * nothing stays attached to the caller's long-lived signal after a file is done.
 */
export function linkedAbort(parent: AbortSignal): { controller: AbortController; dispose: () => void } {
  const controller = new AbortController();
  const follow = () => controller.abort(parent.reason);
  if (parent.aborted) follow();
  else parent.addEventListener("abort", follow, { once: true });
  return { controller, dispose: () => parent.removeEventListener("abort", follow) };
}

/**
 * The signal of one attempt: aborts with the caller's signal, or by itself after `ms` without a call
 * to `arm()`, so that a stalled connection becomes a retryable network error.
 */
class AttemptSignal {
  private readonly link: { controller: AbortController; dispose: () => void };
  private timer: NodeJS.Timeout | undefined;
  timedOut = false;
  constructor(
    parent: AbortSignal,
    private readonly ms: number,
  ) {
    this.link = linkedAbort(parent);
  }
  get signal(): AbortSignal {
    return this.link.controller.signal;
  }
  arm(): void {
    if (this.timer) this.timer.refresh();
    else {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.link.controller.abort();
      }, this.ms);
    }
  }
  dispose(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.link.dispose();
  }
}

/** Turns a failed fetch or body read into the right HubError. */
function networkError(err: unknown, what: string, ctx: HubFetchContext, attempt: AttemptSignal | null): HubError {
  if (ctx.signal.aborted) return abortedError(what, ctx.signal);
  if (err instanceof HubError) return err;
  if (attempt?.timedOut) return new HubError("network", `${what}: no data for ${ctx.idleTimeoutMs} ms`, true);
  return new HubError("network", `${what}: ${describe(err)}`, true, { cause: err });
}

/** Maps a non-success status to a HubError naming `what` (never the token). */
export async function statusError(res: Response, what: string, hadToken: boolean): Promise<HubError> {
  const errorCode = res.headers.get("x-error-code") ?? "";
  let hubMessage = res.headers.get("x-error-message") ?? "";
  if (!hubMessage) {
    const body = await res.text().catch(() => "");
    try {
      hubMessage = String((JSON.parse(body) as { error?: unknown }).error ?? "");
    } catch {
      hubMessage = body.slice(0, 200);
    }
  }
  const detail = hubMessage ? ` (Hub: ${hubMessage.slice(0, 200)})` : "";
  const s = res.status;
  if (s === 401 || s === 403) {
    const hint = hadToken
      ? " (the token given was refused or has no access; accept the license on the model page)"
      : "";
    return new HubError("auth", `${what}: gated or private repository: set HF_TOKEN${hint}${detail}`);
  }
  if (s === 404) {
    const which =
      errorCode === "RevisionNotFound"
        ? "revision not found"
        : errorCode === "EntryNotFound"
          ? "file not found"
          : "repository or revision not found";
    return new HubError("not-found", `${what}: ${which} (HTTP 404)${detail}`);
  }
  if (s === 429 || s >= 500) return new HubError("http", `${what}: HTTP ${s}${detail}`, true);
  return new HubError("http", `${what}: unexpected HTTP ${s}${detail}`);
}

/** The response to a GET, after following redirects by hand, with the LFS headers of the first hop. */
export interface HubResponse {
  res: Response;
  /** sha256 from `x-linked-etag` (LFS files), else null. */
  sha256: string | null;
  /** Size from `x-linked-size` (LFS files), else null. */
  linkedSize: number | null;
  /** The LFS headers matched `opts.reuse`: the redirect was not followed and `res` is the redirect. */
  reused: boolean;
}

/**
 * GET `url` with `redirect: "manual"`, following up to 10 redirects itself so that the
 * Authorization header goes only to the Hub's origin and the LFS headers of the redirect are kept.
 */
export async function hubGet(
  url: string,
  what: string,
  ctx: HubFetchContext,
  opts: { offset?: number; attempt?: AttemptSignal; accept?: string; reuse?: FileRecord | null } = {},
): Promise<HubResponse> {
  let current = new URL(url);
  let sha256: string | null = null;
  let linkedSize: number | null = null;
  const signal = opts.attempt?.signal ?? ctx.signal;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const headers: Record<string, string> = { "accept-encoding": "identity", "user-agent": "minicpmv-serve" };
    if (opts.accept) headers.accept = opts.accept;
    if (ctx.token && current.origin === ctx.hubOrigin) headers.authorization = `Bearer ${ctx.token}`;
    if (opts.offset) headers.range = `bytes=${opts.offset}-`;
    let res: Response;
    try {
      res = await fetch(current, { headers, redirect: "manual", signal });
    } catch (err) {
      throw networkError(err, what, ctx, opts.attempt ?? null);
    }
    const etag = res.headers.get("x-linked-etag");
    if (sha256 === null && etag) {
      const m = /^(?:W\/)?"?([0-9a-f]{64})"?$/i.exec(etag.trim());
      if (m) sha256 = (m[1] as string).toLowerCase();
    }
    const size = res.headers.get("x-linked-size");
    if (linkedSize === null && size && /^\d+$/.test(size)) linkedSize = Number(size);
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel().catch(() => {});
      if (opts.reuse && sha256 === opts.reuse.sha256 && linkedSize === opts.reuse.size) {
        return { res, sha256, linkedSize, reused: true };
      }
      current = new URL(location, current);
      continue;
    }
    return { res, sha256, linkedSize, reused: false };
  }
  throw new HubError("http", `${what}: more than ${MAX_REDIRECTS} redirects`);
}

function contentRange(res: Response): { start: number; total: number | null } | null {
  const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
  if (!m) return null;
  return { start: Number(m[1]), total: m[2] === "*" ? null : Number(m[2]) };
}

async function sizeOf(path: string): Promise<number | null> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

async function hashPrefix(path: string, length: number, hash: Hash, signal: AbortSignal): Promise<void> {
  for await (const chunk of createReadStream(path, { start: 0, end: length - 1, signal })) hash.update(chunk as Buffer);
}

/**
 * `reader.read()`, rejecting as soon as `signal` aborts.
 * NOTE: undici does not always settle a pending read when the fetch is aborted just as the body
 * completes; without this race an abort could hang the download.
 */
function readOrAbort(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  signal: AbortSignal,
): Promise<ReadableStreamReadResult<Uint8Array>> {
  return raceAbort(reader.read(), signal);
}

/** `p`, or a rejection with the signal's reason as soon as `signal` aborts. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Runs `fn` up to `ctx.maxAttempts` times while it fails with a retryable HubError, backing off 1x, 2x, 4x... */
export async function withRetries<T>(
  what: string,
  ctx: HubFetchContext,
  fn: (attempt: number) => Promise<T>,
  onRetry: (attempt: number, err: HubError) => void = () => {},
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (ctx.signal.aborted) throw abortedError(what, ctx.signal);
      if (!(err instanceof HubError) || !err.retryable || attempt >= ctx.maxAttempts) throw err;
      onRetry(attempt, err);
      try {
        await delay(ctx.retryDelayMs * 2 ** (attempt - 1), undefined, { signal: ctx.signal });
      } catch {
        throw abortedError(what, ctx.signal);
      }
    }
  }
}

/**
 * GET `url` and parse its JSON body, with the same retries, idle timeout and error mapping as files.
 * A body that is not JSON is an `invalid` error.
 */
export async function hubGetJson(url: string, what: string, ctx: HubFetchContext): Promise<unknown> {
  return withRetries(what, ctx, async () => {
    const attempt = new AttemptSignal(ctx.signal, ctx.idleTimeoutMs);
    try {
      attempt.arm();
      const { res } = await hubGet(url, what, ctx, { attempt, accept: "application/json" });
      if (res.status !== 200) throw await statusError(res, what, ctx.token !== undefined);
      let text: string;
      try {
        text = await raceAbort(res.text(), attempt.signal);
      } catch (err) {
        throw networkError(err, what, ctx, attempt);
      }
      try {
        return JSON.parse(text) as unknown;
      } catch (err) {
        throw new HubError("invalid", `${what}: the Hub's answer is not JSON (${(err as Error).message})`);
      }
    } finally {
      attempt.dispose();
    }
  });
}

/**
 * Downloads `url` to `dest` (see the file comment). When `reuse` is given (the file on disk, recorded
 * for another commit) and the Hub's sha256 and size match it, nothing is transferred (`skipped`).
 * Errors: HubError (`integrity` deletes the partial file; `aborted` and `network` keep it for resuming).
 */
export async function downloadFile(
  file: { name: string; url: string; dest: string },
  what: string,
  ctx: HubFetchContext,
  reuse: FileRecord | null,
): Promise<FileRecord & { skipped: boolean }> {
  return withRetries(
    what,
    ctx,
    () => downloadAttempt(file, what, ctx, reuse),
    (attempt, err) => {
      ctx.onProgress({ event: "retry", file: file.name, bytes: 0, total: null, attempt, error: err.message });
    },
  );
}

async function downloadAttempt(
  file: { name: string; url: string; dest: string },
  what: string,
  ctx: HubFetchContext,
  reuse: FileRecord | null,
): Promise<FileRecord & { skipped: boolean }> {
  const partial = `${file.dest}.incomplete`;
  let offset = (await sizeOf(partial)) ?? 0;
  const attempt = new AttemptSignal(ctx.signal, ctx.idleTimeoutMs);
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  let fh: FileHandle | null = null;
  let deletePartial = false;
  // NOTE: the kept prefix is hashed before the request, so a slow disk cannot stall an open connection.
  let hash = createHash("sha256");
  try {
    if (offset > 0) await hashPrefix(partial, offset, hash, ctx.signal);
    attempt.arm();
    let r = await hubGet(file.url, what, ctx, { offset, attempt, reuse });
    if (r.reused && reuse) return { ...reuse, skipped: true };
    if (offset > 0) {
      const range = r.res.status === 206 ? contentRange(r.res) : null;
      const unusable =
        r.res.status === 416 ||
        (r.res.status === 206 && range?.start !== offset) ||
        (r.linkedSize !== null && offset > r.linkedSize);
      if (unusable) {
        // The partial file does not fit what the server has now: start over.
        await r.res.body?.cancel().catch(() => {});
        await rm(partial, { force: true });
        offset = 0;
        hash = createHash("sha256");
        r = await hubGet(file.url, what, ctx, { attempt });
      }
    }
    const { res } = r;
    if (res.status === 200) {
      if (offset > 0) {
        // The server ignored the Range header: start over.
        offset = 0;
        hash = createHash("sha256");
      }
    } else if (!(res.status === 206 && offset > 0)) {
      throw await statusError(res, what, ctx.token !== undefined);
    }

    const length = res.headers.get("content-length");
    const encoded = (res.headers.get("content-encoding") ?? "identity") !== "identity";
    const total =
      r.linkedSize ??
      (res.status === 206 ? (contentRange(res)?.total ?? null) : length && !encoded ? Number(length) : null);
    fh = await open(partial, offset > 0 ? "a" : "w");
    let bytes = offset;
    ctx.onProgress({ event: "start", file: file.name, bytes, total });
    let lastReport = 0;
    if (res.body) {
      reader = res.body.getReader();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await readOrAbort(reader, attempt.signal);
        } catch (err) {
          throw networkError(err, what, ctx, attempt);
        }
        if (chunk.done) {
          reader = null;
          break;
        }
        attempt.arm();
        const data = chunk.value;
        if (total !== null && bytes + data.length > total) {
          deletePartial = true;
          throw new HubError("integrity", `${what}: size mismatch: more than the expected ${total} bytes; deleted`);
        }
        for (let done = 0; done < data.length; ) {
          done += (await fh.write(data, done, data.length - done)).bytesWritten;
        }
        hash.update(data);
        bytes += data.length;
        const now = Date.now();
        if (lastReport === 0 || now - lastReport >= PROGRESS_EVERY_MS) {
          lastReport = now;
          ctx.onProgress({ event: "progress", file: file.name, bytes, total });
        }
      }
    }
    if (total !== null && bytes < total) {
      throw new HubError("network", `${what}: connection closed after ${bytes} of ${total} bytes`, true);
    }
    await fh.sync();
    await fh.close();
    fh = null;
    const sha256 = hash.digest("hex");
    if (r.sha256 !== null && sha256 !== r.sha256) {
      deletePartial = true;
      throw new HubError("integrity", `${what}: sha256 mismatch: expected ${r.sha256}, got ${sha256}; deleted`);
    }
    await rename(partial, file.dest);
    ctx.onProgress({ event: "done", file: file.name, bytes, total: bytes });
    return { size: bytes, sha256, skipped: false };
  } finally {
    attempt.dispose();
    // Not awaited: cancelling a body whose fetch was aborted can stay pending; the socket is closed anyway.
    if (reader) reader.cancel().catch(() => {});
    if (fh) await fh.close().catch(() => {});
    if (deletePartial) await rm(partial, { force: true });
  }
}
