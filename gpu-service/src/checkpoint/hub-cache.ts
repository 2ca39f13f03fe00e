/**
 * The Hugging Face hub cache, the layout `hf download`, `huggingface_hub`, transformers and vLLM share, so a
 * model fetched by any of them is served without downloading it again, and one fetched here is theirs too:
 *
 *   $HF_HUB_CACHE/                                   (default ~/.cache/huggingface/hub, see hubCacheDir)
 *     models--openbmb--MiniCPM-V-2_6/
 *       refs/main                                    "<40-hex commit>"
 *       blobs/<sha256>                               LFS files (weights), named by their content's sha256
 *       blobs/<git blob sha1>                        small files (configs, tokenizer), named by their git id
 *       blobs/<name>.incomplete                      a partial download, resumed on the next run
 *       snapshots/<commit>/config.json -> ../../blobs/<id>   one relative symlink per file
 *     .locks/models--openbmb--MiniCPM-V-2_6/minicpmv-serve.lock
 *
 * `ensureHubSnapshot` resolves a revision (refs/<name>, or a commit) to a snapshot holding every file the
 * stack reads; online it asks the Hub for the commit and fetches only what the snapshot lacks; offline
 * (`HF_HUB_OFFLINE`) it never connects and fails, naming the cache, when the snapshot is incomplete.
 */

import { existsSync } from "node:fs";
import { mkdir, readFile, readlink, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { HubError } from "./hub-error";
import { downloadFile, type HubFetchContext, type HubProgress } from "./hub-file";
import { acquireDirLock } from "./hub-lock";

/** The hub cache directory from the environment, as `huggingface_hub` computes it. */
export function hubCacheDir(env: Record<string, string | undefined>, home: string = homedir()): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, "hub");
  return join(env.XDG_CACHE_HOME || join(home, ".cache"), "huggingface", "hub");
}

/** `models--<org>--<name>`: a model repository's folder in the hub cache. */
export function repoFolder(repo: string): string {
  return `models--${repo.replaceAll("/", "--")}`;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;

/** The commit a revision points at in the cache (a commit is itself), or null when the cache has no such ref. */
export async function readRef(cacheDir: string, repo: string, revision: string): Promise<string | null> {
  if (COMMIT_RE.test(revision)) return revision;
  try {
    const sha = (await readFile(join(cacheDir, repoFolder(repo), "refs", revision), "utf8")).trim();
    return COMMIT_RE.test(sha) ? sha : null;
  } catch {
    return null;
  }
}

/** `<cache>/models--org--name/snapshots/<commit>`. */
export function snapshotDir(cacheDir: string, repo: string, commit: string): string {
  return join(resolve(cacheDir), repoFolder(repo), "snapshots", commit);
}

/** Size of the file at `path` (following symlinks), or null when it or its blob is missing. */
async function fileSize(path: string): Promise<number | null> {
  try {
    const s = await stat(path);
    return s.isFile() ? s.size : null;
  } catch {
    return null;
  }
}

/**
 * The files of `snapshot` the stack needs that are missing: the required configs and tokenizer, then the
 * weights (the single file, or the index and every shard it lists). Empty when the snapshot is complete.
 */
export async function missingSnapshotFiles(
  snapshot: string,
  required: readonly string[],
  readShards: (indexPath: string) => Promise<string[]>,
): Promise<string[]> {
  const missing: string[] = [];
  for (const f of required) if ((await fileSize(join(snapshot, f))) === null) missing.push(f);
  const index = join(snapshot, "model.safetensors.index.json");
  if ((await fileSize(index)) !== null) {
    for (const shard of await readShards(index))
      if ((await fileSize(join(snapshot, shard))) === null) missing.push(shard);
  } else if ((await fileSize(join(snapshot, "model.safetensors"))) === null) {
    missing.push("model.safetensors (or model.safetensors.index.json)");
  }
  return missing;
}

/** Writes `refs/<revision>` = commit (atomically), unless the revision is the commit itself. */
export async function writeRef(cacheDir: string, repo: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const path = join(cacheDir, repoFolder(repo), "refs", revision);
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, commit);
  await rename(tmp, path);
}

/** One file to place in a snapshot. */
export interface SnapshotFile {
  name: string;
  /** The blob name: an LFS file's sha256, else its git blob id; null when the Hub did not say. */
  blob: string | null;
  size: number | null;
  url: string;
}

/**
 * Places `file` in the snapshot: reuses the blob when the cache has it (complete, right size), else
 * downloads it into `blobs/` (resuming `blobs/<blob>.incomplete`), then links `snapshots/<commit>/<name>`
 * to it with a relative symlink. Returns whether bytes were transferred.
 */
export async function placeSnapshotFile(
  repoDir: string,
  commit: string,
  file: SnapshotFile,
  what: string,
  ctx: HubFetchContext,
): Promise<boolean> {
  const link = join(repoDir, "snapshots", commit, file.name);
  const blobs = join(repoDir, "blobs");
  await mkdir(dirname(link), { recursive: true });
  await mkdir(blobs, { recursive: true });
  const linked = await fileSize(link);
  if (linked !== null && (file.size === null || linked === file.size)) {
    ctx.onProgress({ event: "skipped", file: file.name, bytes: linked, total: linked });
    return false;
  }
  let blobPath: string;
  let transferred = false;
  const known = file.blob ? join(blobs, file.blob) : null;
  const have = known ? await fileSize(known) : null;
  if (known && have !== null && (file.size === null || have === file.size)) {
    blobPath = known;
    ctx.onProgress({ event: "skipped", file: file.name, bytes: have, total: have });
  } else {
    // Without a blob name from the Hub the download is named after the commit and file, then after its sha256.
    const dest = known ?? join(blobs, `${commit}.${file.name}`);
    const result = await downloadFile({ name: file.name, url: file.url, dest }, what, ctx, null);
    transferred = !result.skipped;
    blobPath = dest;
    if (!known) {
      blobPath = join(blobs, result.sha256);
      await rename(dest, blobPath);
    }
  }
  const target = relative(dirname(link), blobPath);
  try {
    if ((await readlink(link)) === target) return transferred;
  } catch {
    // no link yet (or a plain file left by another tool): replaced below
  }
  await rm(link, { force: true });
  await symlink(target, link);
  return transferred;
}

/** The lock of one repository in the cache (huggingface_hub keeps its own locks in the same folder). */
export async function lockRepo(
  cacheDir: string,
  repo: string,
  signal: AbortSignal,
  onProgress: (p: HubProgress) => void,
): Promise<() => Promise<void>> {
  const dir = join(cacheDir, ".locks", repoFolder(repo));
  await mkdir(dir, { recursive: true });
  return acquireDirLock(join(dir, "minicpmv-serve.lock"), {
    signal,
    onWait: (holder) => onProgress({ event: "waiting", dir, holder }),
  });
}

/** True when `dir` looks like a snapshot folder of the hub cache. */
export function isSnapshotDir(dir: string): boolean {
  return /[\\/]models--[^\\/]+[\\/]snapshots[\\/][0-9a-f]{40}$/.test(resolve(dir)) && existsSync(dir);
}

/** Thrown when HF_HUB_OFFLINE is set and the cache lacks the snapshot or some of its files. */
export function offlineError(cacheDir: string, repo: string, revision: string, missing: string[]): HubError {
  const which = missing.length ? `lacks ${missing.join(", ")}` : "has no snapshot for it";
  return new HubError(
    "not-found",
    `${repo}@${revision}: HF_HUB_OFFLINE is set and the hub cache ${cacheDir} ${which}; ` +
      `download it first (npm run download -- ${repo}, or hf download ${repo}) or unset HF_HUB_OFFLINE`,
  );
}
