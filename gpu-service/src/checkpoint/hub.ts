/**
 * Downloads a MiniCPM-V 2.6 checkpoint from the Hugging Face Hub (or a mirror speaking its API) into
 * a directory that `loadCheckpoint` and the preprocess tokenizer read: only the files the stack uses.
 *
 *   lock <dir>/.download.lock
 *   GET {endpoint}/api/models/{repo}/revision/{revision} -> { sha, siblings }   -> choose files
 *   configs + tokenizer + (model.safetensors | model.safetensors.index.json)    -> downloadFile() each
 *   index.json weight_map -> shards                                              -> downloadFile() each
 *   <dir>/.download.json records { name, size, sha256, commit } per complete file; unlock
 */

import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  hubCacheDir,
  lockRepo,
  missingSnapshotFiles,
  offlineError,
  placeSnapshotFile,
  readRef,
  repoFolder,
  snapshotDir,
  writeRef,
} from "./hub-cache";
import { HubError } from "./hub-error";
import {
  downloadFile,
  type FileRecord,
  type HubFetchContext,
  type HubProgress,
  hubGetJson,
  linkedAbort,
} from "./hub-file";
import { acquireDirLock } from "./hub-lock";

export { HubError, type HubErrorCode } from "./hub-error";
export type { HubProgress } from "./hub-file";

/** The public Hub; `HF_ENDPOINT` overrides it (mirrors, a local fake in tests). */
export const DEFAULT_HUB_ENDPOINT = "https://huggingface.co";
/** Per-directory record of complete files. */
export const MANIFEST_FILE = ".download.json";
/** Per-directory lock between processes. */
export const LOCK_FILE = ".download.lock";

/** Files every MiniCPM-V 2.6 directory must have: the configs the services read and the tokenizer. */
export const REQUIRED_FILES = ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"];
/** Fetched when the repository has them. */
export const OPTIONAL_FILES = [
  "generation_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
];
/** The shard index of a sharded checkpoint. */
export const INDEX_FILE = "model.safetensors.index.json";
const SINGLE_FILE = "model.safetensors";

/** Options of `downloadFromHub`. */
export interface HubDownloadOptions {
  /** `<org>/<name>`, e.g. `openbmb/MiniCPM-V-2_6`. */
  repo: string;
  /** Branch, tag or commit (default `main`). */
  revision?: string;
  /** Hub base URL (default https://huggingface.co; callers pass `HF_ENDPOINT`, see `hubEnv`). */
  endpoint?: string;
  /** Access token for gated or private repositories (callers pass `HF_TOKEN`); sent only to `endpoint`. */
  token?: string;
  /**
   * A plain target directory (`hf download --local-dir`'s layout: the files themselves plus `.download.json`).
   * Unset: the Hugging Face hub cache `cacheDir` (hub-cache.ts), and the snapshot directory is returned.
   */
  dir?: string;
  /** The hub cache (callers pass `hubCacheDir(env)`; default ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Never contact the Hub (`HF_HUB_OFFLINE`): the snapshot must already be complete in `cacheDir`. */
  offline?: boolean;
  /** Stops the download promptly; `.incomplete` files stay so the next run resumes them. */
  signal?: AbortSignal;
  onProgress?: (p: HubProgress) => void;
  /** Files transferred at the same time (default 4). */
  concurrency?: number;
  /** Attempts per file on network errors and 5xx (default 3), each resuming where the last stopped. */
  maxAttempts?: number;
  /** Wait before the second attempt; doubles each time (default 1000 ms). */
  retryDelayMs?: number;
  /** A connection that sends nothing for this long is dropped and retried (default 60000 ms). */
  idleTimeoutMs?: number;
}

interface Manifest {
  repo: string;
  revision: string;
  /** Commit of the last complete download (null while one is in progress). */
  commit: string | null;
  files: Record<string, FileRecord & { commit: string }>;
}

const REPO_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** Plain file names only: whatever the Hub lists becomes a path under the target directory. */
const SAFE_NAME_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** `HF_ENDPOINT` and `HF_TOKEN` from an environment, as `downloadFromHub` options. */
export function hubEnv(env: Record<string, string | undefined>): { endpoint?: string; token?: string } {
  return {
    ...(env.HF_ENDPOINT ? { endpoint: env.HF_ENDPOINT } : {}),
    ...(env.HF_TOKEN ? { token: env.HF_TOKEN } : {}),
  };
}

/** Throws `invalid` unless `repo` is `<org>/<name>`. */
export function validateRepo(repo: string): void {
  if (!REPO_RE.test(repo) || repo.includes("..")) {
    throw new HubError("invalid", `repo must be <org>/<name> (letters, digits, . _ -), got ${JSON.stringify(repo)}`);
  }
}

/** Throws `invalid` unless `revision` is a plausible branch, tag or commit. */
export function validateRevision(revision: string): void {
  if (!revision || revision.length > 200 || revision.split("/").some((p) => p === "" || p === "." || p === "..")) {
    throw new HubError("invalid", `revision must be a branch, tag or commit, got ${JSON.stringify(revision)}`);
  }
}

/**
 * Chooses the files of a MiniCPM-V 2.6 directory among a repository's file names: the required and
 * optional configs and tokenizer files, then the shard index or the single safetensors file. Nothing
 * else (no .bin, no code, no images). Throws `unsupported` when a required file or the weights are missing.
 */
export function selectCheckpointFiles(repo: string, names: readonly string[]): { files: string[]; index: boolean } {
  const have = new Set(names);
  const missing = REQUIRED_FILES.filter((f) => !have.has(f));
  if (missing.length > 0) {
    throw new HubError("unsupported", `${repo}: missing ${missing.join(", ")}; not a MiniCPM-V 2.6 checkpoint`);
  }
  const files = [...REQUIRED_FILES, ...OPTIONAL_FILES.filter((f) => have.has(f))];
  if (have.has(INDEX_FILE)) return { files: [...files, INDEX_FILE], index: true };
  if (have.has(SINGLE_FILE)) return { files: [...files, SINGLE_FILE], index: false };
  throw new HubError(
    "unsupported",
    `${repo}: no safetensors weights (${SINGLE_FILE} or ${INDEX_FILE}); .bin and other formats are not supported`,
  );
}

/** The shard names listed by a downloaded `model.safetensors.index.json`, sorted. */
export async function readShardNames(path: string, what: string): Promise<string[]> {
  let map: unknown;
  try {
    map = (JSON.parse(await readFile(path, "utf8")) as { weight_map?: unknown }).weight_map;
  } catch (err) {
    throw new HubError("invalid", `${what}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new HubError("invalid", `${what}: weight_map must be an object`);
  }
  const shards = new Set<string>();
  for (const [tensor, file] of Object.entries(map)) {
    if (typeof file !== "string" || !SAFE_NAME_RE.test(file) || !file.endsWith(".safetensors")) {
      throw new HubError("invalid", `${what}: weight_map[${tensor}] must be a .safetensors file name, got ${file}`);
    }
    shards.add(file);
  }
  if (shards.size === 0) throw new HubError("invalid", `${what}: weight_map is empty`);
  return [...shards].sort();
}

async function readManifest(dir: string, repo: string, revision: string): Promise<Manifest> {
  const empty: Manifest = { repo, revision, commit: null, files: {} };
  let m: Partial<Manifest>;
  try {
    m = JSON.parse(await readFile(join(dir, MANIFEST_FILE), "utf8")) as Partial<Manifest>;
  } catch {
    return empty;
  }
  if (m.repo !== repo || typeof m.files !== "object" || m.files === null) return empty;
  return { ...empty, commit: m.commit ?? null, files: m.files };
}

async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  const tmp = join(dir, `${MANIFEST_FILE}.tmp-${process.pid}`);
  await writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
  await rename(tmp, join(dir, MANIFEST_FILE));
}

async function sizeOf(path: string): Promise<number | null> {
  try {
    return (await stat(path)).size;
  } catch {
    return null;
  }
}

/** Runs `fn` over `items`, `limit` at a time; on the first failure aborts the rest, waits for them, rethrows it. */
export async function runPool<T>(
  items: readonly T[],
  limit: number,
  outer: AbortSignal,
  fn: (item: T, signal: AbortSignal) => Promise<void>,
): Promise<void> {
  const { controller: stop, dispose } = linkedAbort(outer);
  const signal = stop.signal;
  let next = 0;
  let failure: { err: unknown } | null = null;
  const worker = async () => {
    while (failure === null && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item, signal);
      } catch (err) {
        if (failure === null) {
          failure = { err };
          stop.abort();
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  dispose();
  if (failure !== null) throw (failure as { err: unknown }).err;
}

/** One file of a revision as the Hub lists it (`?blobs=true`: git blob id, and sha256/size for LFS files). */
export interface HubSibling {
  name: string;
  /** Git blob id (sha1) of the file, or of its LFS pointer. */
  blobId: string | null;
  /** sha256 of an LFS file's content. */
  lfsSha256: string | null;
  size: number | null;
}

/** Resolves `revision` to its commit and lists the repository's files with their blob ids. */
export async function fetchRevision(
  endpoint: string,
  repo: string,
  revision: string,
  ctx: HubFetchContext,
): Promise<{ sha: string; names: string[]; siblings: HubSibling[] }> {
  const what = `${repo}@${revision}`;
  const url = `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
  const body = ((await hubGetJson(url, what, ctx)) ?? {}) as { sha?: unknown; siblings?: unknown };
  if (typeof body.sha !== "string" || !/^[0-9a-f]{40}$/.test(body.sha)) {
    throw new HubError("invalid", `${what}: the Hub's answer has no commit sha`);
  }
  if (!Array.isArray(body.siblings)) throw new HubError("invalid", `${what}: the Hub's answer has no siblings list`);
  const siblings: HubSibling[] = [];
  for (const raw of body.siblings as Record<string, unknown>[]) {
    if (typeof raw?.rfilename !== "string") continue;
    const lfs = (raw.lfs ?? null) as { sha256?: unknown; size?: unknown } | null;
    const hex = (v: unknown, n: number) => (typeof v === "string" && new RegExp(`^[0-9a-f]{${n}}$`).test(v) ? v : null);
    const lfsSize = typeof lfs?.size === "number" ? lfs.size : null;
    siblings.push({
      name: raw.rfilename,
      blobId: hex(raw.blobId, 40),
      lfsSha256: hex(lfs?.sha256, 64),
      size: lfsSize ?? (typeof raw.size === "number" ? raw.size : null),
    });
  }
  return { sha: body.sha, names: siblings.map((s) => s.name), siblings };
}

/**
 * Downloads the files of a MiniCPM-V 2.6 checkpoint (see `selectCheckpointFiles`) from the Hub into
 * `dir` and returns `dir`. Files complete from an earlier run are skipped, partial ones resumed.
 * Errors are `HubError`s naming the repository and the file.
 */
export async function downloadFromHub(opts: HubDownloadOptions): Promise<string> {
  if (opts.dir === undefined) return ensureHubSnapshot(opts);
  const { repo } = opts;
  const revision = opts.revision ?? "main";
  validateRepo(repo);
  validateRevision(revision);
  const endpoint = (opts.endpoint ?? DEFAULT_HUB_ENDPOINT).replace(/\/+$/, "");
  let hubOrigin: string;
  try {
    hubOrigin = new URL(endpoint).origin;
  } catch {
    throw new HubError("invalid", `endpoint must be an http(s) URL, got ${JSON.stringify(endpoint)}`);
  }
  const concurrency = opts.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new HubError("invalid", `concurrency must be an integer >= 1, got ${concurrency}`);
  }
  const dir = resolve(opts.dir);
  const signal = opts.signal ?? new AbortController().signal;
  const onProgress = opts.onProgress ?? (() => {});
  const ctx: HubFetchContext = {
    hubOrigin,
    token: opts.token,
    signal,
    maxAttempts: opts.maxAttempts ?? 3,
    retryDelayMs: opts.retryDelayMs ?? 1000,
    idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
    onProgress,
  };

  await mkdir(dir, { recursive: true });
  let release: () => Promise<void>;
  try {
    release = await acquireDirLock(join(dir, LOCK_FILE), {
      signal,
      onWait: (holder) => onProgress({ event: "waiting", dir, holder }),
    });
  } catch (err) {
    if (signal.aborted) throw new HubError("aborted", `${repo}: download aborted`, false, { cause: signal.reason });
    throw err;
  }
  try {
    const { sha, names } = await fetchRevision(endpoint, repo, revision, ctx);
    const plan = selectCheckpointFiles(`${repo}@${revision}`, names);
    onProgress({ event: "plan", repo, commit: sha, files: plan.files });
    const manifest = await readManifest(dir, repo, revision);
    let saving = Promise.resolve();
    const save = () => {
      saving = saving.then(() => writeManifest(dir, manifest));
      return saving;
    };

    const fetchOne = async (name: string, fileSignal: AbortSignal) => {
      const dest = join(dir, name);
      const known = manifest.files[name];
      const onDisk = known ? await sizeOf(dest) : null;
      const reuse = known && onDisk === known.size ? { size: known.size, sha256: known.sha256 } : null;
      if (reuse && known?.commit === sha) {
        onProgress({ event: "skipped", file: name, bytes: reuse.size, total: reuse.size });
        return;
      }
      const url = `${endpoint}/${repo}/resolve/${sha}/${encodeURIComponent(name)}`;
      const result = await downloadFile({ name, url, dest }, `${repo}/${name}`, { ...ctx, signal: fileSignal }, reuse);
      if (result.skipped) onProgress({ event: "skipped", file: name, bytes: result.size, total: result.size });
      manifest.files[name] = { size: result.size, sha256: result.sha256, commit: sha };
      await save();
    };

    await runPool(plan.files, concurrency, signal, fetchOne);
    let wanted = plan.files;
    if (plan.index) {
      const shards = await readShardNames(join(dir, INDEX_FILE), `${repo}/${INDEX_FILE}`);
      const have = new Set(names);
      const absent = shards.filter((s) => !have.has(s));
      if (absent.length > 0) {
        throw new HubError("invalid", `${repo}/${INDEX_FILE} lists ${absent.join(", ")}, which ${repo} does not have`);
      }
      onProgress({ event: "plan", repo, commit: sha, files: shards });
      await runPool(shards, concurrency, signal, fetchOne);
      wanted = [...wanted, ...shards];
    }
    // Files an earlier commit needed and this one does not (e.g. model.safetensors after a switch to shards).
    for (const name of Object.keys(manifest.files)) {
      if (wanted.includes(name) || !SAFE_NAME_RE.test(name)) continue;
      await rm(join(dir, name), { force: true });
      delete manifest.files[name];
    }
    manifest.commit = sha;
    await save();
    return dir;
  } finally {
    await release();
  }
}

/** The fetch context and endpoint of one download. */
function fetchContext(opts: HubDownloadOptions, signal: AbortSignal): { endpoint: string; ctx: HubFetchContext } {
  const endpoint = (opts.endpoint ?? DEFAULT_HUB_ENDPOINT).replace(/\/+$/, "");
  let hubOrigin: string;
  try {
    hubOrigin = new URL(endpoint).origin;
  } catch {
    throw new HubError("invalid", `endpoint must be an http(s) URL, got ${JSON.stringify(endpoint)}`);
  }
  return {
    endpoint,
    ctx: {
      hubOrigin,
      token: opts.token,
      signal,
      maxAttempts: opts.maxAttempts ?? 3,
      retryDelayMs: opts.retryDelayMs ?? 1000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
      onProgress: opts.onProgress ?? (() => {}),
    },
  };
}

/**
 * The snapshot directory of `repo@revision` in the Hugging Face hub cache, complete with the files the stack
 * reads (hub-cache.ts). Online: the revision is resolved by the Hub and missing files are fetched (a snapshot
 * left by `hf download` or vLLM is used as it is). Offline (`offline`), or when the Hub cannot be reached and
 * the cached ref's snapshot is complete: the cache alone.
 */
export async function ensureHubSnapshot(opts: HubDownloadOptions): Promise<string> {
  const { repo } = opts;
  const revision = opts.revision ?? "main";
  validateRepo(repo);
  validateRevision(revision);
  const cacheDir = resolve(opts.cacheDir ?? hubCacheDir({}));
  const shards = (path: string) => readShardNames(path, `${repo}/${INDEX_FILE}`);
  const cached = async (): Promise<{ dir: string; missing: string[] } | null> => {
    const sha = await readRef(cacheDir, repo, revision);
    if (!sha) return null;
    const dir = snapshotDir(cacheDir, repo, sha);
    return { dir, missing: await missingSnapshotFiles(dir, REQUIRED_FILES, shards) };
  };
  if (opts.offline) {
    const c = await cached();
    if (!c || c.missing.length > 0) throw offlineError(cacheDir, repo, revision, c?.missing ?? []);
    return c.dir;
  }
  const signal = opts.signal ?? new AbortController().signal;
  const { endpoint, ctx } = fetchContext(opts, signal);
  const concurrency = opts.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new HubError("invalid", `concurrency must be an integer >= 1, got ${concurrency}`);
  }
  let release: () => Promise<void>;
  try {
    release = await lockRepo(cacheDir, repo, signal, ctx.onProgress);
  } catch (err) {
    if (signal.aborted) throw new HubError("aborted", `${repo}: download aborted`, false, { cause: signal.reason });
    throw err;
  }
  try {
    let rev: Awaited<ReturnType<typeof fetchRevision>>;
    try {
      rev = await fetchRevision(endpoint, repo, revision, ctx);
    } catch (err) {
      // huggingface_hub does the same: no connection, but a complete snapshot of the ref in the cache.
      const c = err instanceof HubError && err.code === "network" ? await cached() : null;
      if (c && c.missing.length === 0) return c.dir;
      throw err;
    }
    const { sha, siblings } = rev;
    const plan = selectCheckpointFiles(`${repo}@${revision}`, rev.names);
    ctx.onProgress({ event: "plan", repo, commit: sha, files: plan.files });
    const repoDir = join(cacheDir, repoFolder(repo));
    const byName = new Map(siblings.map((s) => [s.name, s]));
    // NOTE: two files with the same content share one blob: the second waits for the first, then only links.
    const placing = new Map<string, Promise<unknown>>();
    const place = async (name: string, fileSignal: AbortSignal) => {
      const s = byName.get(name);
      const blob = s?.lfsSha256 ?? s?.blobId ?? null;
      const before = blob ? placing.get(blob) : undefined;
      const run = (async () => {
        await before?.catch(() => {});
        await placeOne(name, s, blob, fileSignal);
      })();
      if (blob) placing.set(blob, run);
      await run;
    };
    const placeOne = async (
      name: string,
      s: (typeof siblings)[number] | undefined,
      blob: string | null,
      fileSignal: AbortSignal,
    ) => {
      await placeSnapshotFile(
        repoDir,
        sha,
        {
          name,
          blob,
          size: s?.size ?? null,
          url: `${endpoint}/${repo}/resolve/${sha}/${encodeURIComponent(name)}`,
        },
        `${repo}/${name}`,
        { ...ctx, signal: fileSignal },
      );
    };
    await runPool(plan.files, concurrency, signal, place);
    const dir = snapshotDir(cacheDir, repo, sha);
    if (plan.index) {
      const list = await shards(join(dir, INDEX_FILE));
      const absent = list.filter((s) => !byName.has(s));
      if (absent.length > 0) {
        throw new HubError("invalid", `${repo}/${INDEX_FILE} lists ${absent.join(", ")}, which ${repo} does not have`);
      }
      ctx.onProgress({ event: "plan", repo, commit: sha, files: list });
      await runPool(list, concurrency, signal, place);
    }
    await writeRef(cacheDir, repo, revision, sha);
    return dir;
  } finally {
    await release();
  }
}
