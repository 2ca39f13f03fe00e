/**
 * The Hugging Face hub cache layout against the loopback fake hub: what `ensureHubSnapshot` writes is the
 * layout `huggingface_hub` writes (refs, blobs named by sha256 / git blob id, relative symlinks), and a
 * snapshot another tool left there is served without a transfer, online or offline.
 */
import { createHash } from "node:crypto";
import {
  copyFileSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCheckpoint } from "./checkpoint";
import { ensureTinyCheckpoint } from "./ensure-tiny";
import { ensureHubSnapshot, type HubDownloadOptions, HubError } from "./hub";
import { isSnapshotDir, readRef, repoFolder, snapshotDir } from "./hub-cache";
import { FakeHub } from "./testing/fake-hub";
import { SHARD1, SHARD2, writeMiniRepo } from "./testing/mini-repo";

const REPO = "openbmb/mini";
const SHA1 = "1".repeat(40);
const SHA2 = "2".repeat(40);
let root: string;
let miniDir: string;
let hub: FakeHub;
let n = 0;

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const gitBlobId = (path: string) => {
  const data = readFileSync(path);
  return createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
};
/** How the fake hub (like the Hub) stores a file: LFS for weights and large files, named by sha256. */
const blobName = (path: string) =>
  path.endsWith(".safetensors") || statSync(path).size >= 1 << 20 ? sha256(path) : gitBlobId(path);
const newCache = () => join(root, `cache${n++}`);
const files = () => Object.fromEntries(readdirSync(miniDir).map((f) => [f, join(miniDir, f)]));
const transfers = (from: number) => hub.since(from).filter((r) => r.file !== null);

function snapshot(cacheDir: string, opts: Partial<HubDownloadOptions> = {}): Promise<string> {
  return ensureHubSnapshot({ repo: REPO, endpoint: hub.endpoint, cacheDir, retryDelayMs: 10, ...opts });
}

/** Writes `files` of the mini repository the way `hf download` leaves them, plus files the stack never reads. */
function writeForeignSnapshot(cacheDir: string, commit: string, skip: string[] = []): string {
  const repoDir = join(cacheDir, repoFolder(REPO));
  const snap = join(repoDir, "snapshots", commit);
  mkdirSync(join(repoDir, "blobs"), { recursive: true });
  mkdirSync(join(repoDir, "refs"), { recursive: true });
  mkdirSync(snap, { recursive: true });
  writeFileSync(join(repoDir, "refs", "main"), commit);
  const extra = join(root, "README.md");
  writeFileSync(extra, "# mini\n");
  for (const [name, path] of Object.entries({ ...files(), "README.md": extra })) {
    if (skip.includes(name)) continue;
    const blob = blobName(path);
    copyFileSync(path, join(repoDir, "blobs", blob));
    symlinkSync(`../../blobs/${blob}`, join(snap, name));
  }
  return snap;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "hub-cache-test-"));
  miniDir = join(root, "mini-src");
  await writeMiniRepo(miniDir, await ensureTinyCheckpoint());
  hub = await FakeHub.start({ [REPO]: { sha: SHA1, files: files() } });
});

afterAll(async () => {
  await hub?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("the Hugging Face hub cache", () => {
  it("writes refs/main, blobs named by sha256 (LFS) or git blob id, and relative snapshot symlinks", async () => {
    hub.repos[REPO] = { sha: SHA1, files: files() };
    const cacheDir = newCache();
    const dir = await snapshot(cacheDir);
    const repoDir = join(cacheDir, "models--openbmb--mini");
    expect(dir).toBe(join(repoDir, "snapshots", SHA1));
    expect(isSnapshotDir(dir)).toBe(true);
    expect(readFileSync(join(repoDir, "refs", "main"), "utf8")).toBe(SHA1);
    expect(readdirSync(dir).sort()).toEqual(Object.keys(files()).sort());
    for (const name of readdirSync(dir)) {
      expect(lstatSync(join(dir, name)).isSymbolicLink(), name).toBe(true);
      const src = join(miniDir, name);
      const blob = blobName(src);
      expect(readlinkSync(join(dir, name)), name).toBe(`../../blobs/${blob}`);
      expect(sha256(join(dir, name))).toBe(sha256(src));
    }
    expect(readdirSync(join(repoDir, "blobs")).some((f) => f.endsWith(".incomplete"))).toBe(false);
    const ckpt = await loadCheckpoint(dir);
    await ckpt.close();

    // A second start asks the Hub for the commit and transfers nothing.
    const from = hub.log.length;
    expect(await snapshot(cacheDir)).toBe(dir);
    expect(hub.since(from).map((r) => r.path)).toEqual([`/api/models/${REPO}/revision/main?blobs=true`]);
  });

  it("serves a snapshot `hf download` left (more files than the stack reads) without transferring a byte", async () => {
    hub.repos[REPO] = { sha: SHA1, files: files() };
    const cacheDir = newCache();
    const snap = writeForeignSnapshot(cacheDir, SHA1);
    const from = hub.log.length;
    expect(await snapshot(cacheDir)).toBe(snap);
    expect(transfers(from)).toEqual([]);
    // Offline: not even the API call.
    const before = hub.log.length;
    expect(await snapshot(cacheDir, { offline: true, endpoint: "http://127.0.0.1:1" })).toBe(snap);
    expect(hub.log.length).toBe(before);
    // The Hub unreachable: the cached ref's complete snapshot is served, as huggingface_hub does.
    expect(await snapshot(cacheDir, { endpoint: "http://127.0.0.1:1", maxAttempts: 1 })).toBe(snap);
  });

  it("offline, an incomplete snapshot is an error naming what is missing; online, only that file is fetched", async () => {
    hub.repos[REPO] = { sha: SHA1, files: files() };
    const cacheDir = newCache();
    writeForeignSnapshot(cacheDir, SHA1, [SHARD2]);
    const err = await snapshot(cacheDir, { offline: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubError);
    expect((err as HubError).message).toContain(`HF_HUB_OFFLINE is set and the hub cache ${cacheDir} lacks ${SHARD2}`);
    expect((await snapshot(newCache(), { offline: true }).catch((e: unknown) => e as Error)).toString()).toMatch(
      /has no snapshot for it/,
    );
    const from = hub.log.length;
    await snapshot(cacheDir);
    expect([...new Set(transfers(from).map((r) => r.file))]).toEqual([SHARD2]);
  });

  it("a new commit links the blobs it shares with the old one instead of downloading them again", async () => {
    hub.repos[REPO] = { sha: SHA1, files: files() };
    const cacheDir = newCache();
    await snapshot(cacheDir);
    hub.repos[REPO] = { sha: SHA2, files: files() };
    const from = hub.log.length;
    const dir = await snapshot(cacheDir);
    expect(dir).toBe(snapshotDir(cacheDir, REPO, SHA2));
    expect(transfers(from)).toEqual([]);
    expect(await readRef(cacheDir, REPO, "main")).toBe(SHA2);
    expect(await readRef(cacheDir, REPO, SHA1)).toBe(SHA1);
    expect(readlinkSync(join(dir, SHARD1))).toBe(`../../blobs/${sha256(join(miniDir, SHARD1))}`);
  });

  it("two files with the same content share one blob, fetched once", async () => {
    const same = join(root, "same.txt");
    writeFileSync(same, "identical\n");
    const dupHub = await FakeHub.start({
      [REPO]: { sha: SHA1, files: { ...files(), "vocab.json": same, "merges.txt": same } },
    });
    try {
      const dir = await snapshot(newCache(), { endpoint: dupHub.endpoint });
      const blob = `../../blobs/${gitBlobId(same)}`;
      expect(readlinkSync(join(dir, "vocab.json"))).toBe(blob);
      expect(readlinkSync(join(dir, "merges.txt"))).toBe(blob);
      expect(readFileSync(join(dir, "merges.txt"), "utf8")).toBe("identical\n");
      const fetched = dupHub.log.filter((r) => r.file === "vocab.json" || r.file === "merges.txt");
      expect(fetched).toHaveLength(1);
    } finally {
      await dupHub.close();
    }
  });
});
