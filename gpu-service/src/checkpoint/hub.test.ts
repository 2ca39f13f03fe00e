import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCheckpoint } from "./checkpoint";
import { ensureTinyCheckpoint } from "./ensure-tiny";
import {
  downloadFromHub,
  type HubDownloadOptions,
  HubError,
  type HubProgress,
  hubEnv,
  LOCK_FILE,
  MANIFEST_FILE,
  selectCheckpointFiles,
} from "./hub";
import { hubCacheDir } from "./hub-cache";
import { FakeHub } from "./testing/fake-hub";
import { SHARD1, SHARD2, writeMiniRepo } from "./testing/mini-repo";

const TOKEN = "hf_secret_token_123";
const TINY_FILES = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "preprocessor_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
];

let root: string;
let tinyDir: string;
let miniDir: string;
let hub: FakeHub;
let n = 0;

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

function outDir(): string {
  return join(root, `out${n++}`);
}

/** Downloads with fast retries; collects progress events. */
async function download(
  repo: string,
  opts: Partial<HubDownloadOptions> = {},
): Promise<{ dir: string; events: HubProgress[] }> {
  const events: HubProgress[] = [];
  const dir = await downloadFromHub({
    repo,
    endpoint: hub.endpoint,
    dir: outDir(),
    retryDelayMs: 10,
    ...opts,
    onProgress: (p) => {
      events.push(p);
      opts.onProgress?.(p);
    },
  });
  return { dir, events };
}

async function rejection(p: Promise<unknown>): Promise<HubError> {
  const err = await p.then(
    () => new Error("expected a rejection"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(HubError);
  return err as HubError;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "hub-test-"));
  tinyDir = await ensureTinyCheckpoint();
  miniDir = join(root, "mini-src");
  await writeMiniRepo(miniDir, tinyDir);
  const junk = join(root, "junk");
  mkdirSync(junk);
  for (const f of ["pytorch_model.bin", "modeling_minicpmv.py", "demo.png", "README.md"]) {
    writeFileSync(join(junk, f), `not for the stack: ${f}\n`);
  }
  const junkFiles = {
    "pytorch_model.bin": join(junk, "pytorch_model.bin"),
    "modeling_minicpmv.py": join(junk, "modeling_minicpmv.py"),
    "assets/demo.png": join(junk, "demo.png"),
    "README.md": join(junk, "README.md"),
  };
  const dirFiles = (dir: string) => Object.fromEntries(readdirSync(dir).map((f) => [f, join(dir, f)]));
  hub = await FakeHub.start({
    "openbmb/tiny-a": { sha: "a".repeat(40), files: { ...dirFiles(tinyDir), ...junkFiles } },
    "openbmb/mini": { sha: "b".repeat(40), files: { ...dirFiles(miniDir), ...junkFiles } },
    "openbmb/mini-gated": { sha: "c".repeat(40), files: dirFiles(miniDir), token: TOKEN },
    "openbmb/no-weights": {
      sha: "d".repeat(40),
      files: {
        ...junkFiles,
        ...Object.fromEntries(
          Object.entries(dirFiles(miniDir)).filter(([f]) => f.endsWith("config.json") || f === "tokenizer.json"),
        ),
      },
    },
  });
});

afterAll(async () => {
  await hub?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("selectCheckpointFiles / hubCacheDir / hubEnv", () => {
  it("keeps only the files the stack reads", () => {
    const names = [
      "config.json",
      "preprocessor_config.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "vocab.json",
      "merges.txt",
      "model.safetensors.index.json",
      "model-00001-of-00002.safetensors",
      "pytorch_model.bin",
      "modeling_minicpmv.py",
      "assets/demo.png",
    ];
    expect(selectCheckpointFiles("o/r", names)).toEqual({
      files: [
        "config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "model.safetensors.index.json",
      ],
      index: true,
    });
    expect(() => selectCheckpointFiles("o/r", names.slice(1))).toThrow("o/r: missing config.json");
    expect(() => selectCheckpointFiles("o/r", names.slice(0, 4))).toThrow("o/r: no safetensors weights");
  });

  it("derives the hub cache directory and reads HF_ENDPOINT / HF_TOKEN", async () => {
    expect(hubCacheDir({}, "/home/u")).toBe("/home/u/.cache/huggingface/hub");
    expect(hubCacheDir({ XDG_CACHE_HOME: "/x" }, "/home/u")).toBe("/x/huggingface/hub");
    expect(hubCacheDir({ HF_HOME: "/hf", XDG_CACHE_HOME: "/x" })).toBe("/hf/hub");
    expect(hubCacheDir({ HF_HUB_CACHE: "/c", HF_HOME: "/hf" })).toBe("/c");
    await expect(downloadFromHub({ repo: "../etc", offline: true })).rejects.toThrow(
      'repo must be <org>/<name> (letters, digits, . _ -), got "../etc"',
    );
    await expect(downloadFromHub({ repo: "o/r", revision: "../x", offline: true })).rejects.toThrow(
      'revision must be a branch, tag or commit, got "../x"',
    );
    expect(hubEnv({ HF_TOKEN: "t", HF_ENDPOINT: "http://m" })).toEqual({ endpoint: "http://m", token: "t" });
    expect(hubEnv({ HF_TOKEN: "" })).toEqual({});
  });
});

describe("downloadFromHub against a fake hub", () => {
  it("downloads tiny-a (only the needed files), loads it, and a second run transfers nothing", async () => {
    const from = hub.log.length;
    const { dir, events } = await download("openbmb/tiny-a");
    expect(readdirSync(dir).sort()).toEqual([MANIFEST_FILE, ...TINY_FILES].sort());
    for (const f of TINY_FILES) expect(sha256(join(dir, f)), f).toBe(sha256(join(tinyDir, f)));
    const fetched = hub
      .since(from)
      .map((r) => r.file)
      .filter((f) => f !== null);
    expect(new Set(fetched)).toEqual(new Set(TINY_FILES));
    // LFS files went hub (302) -> CDN; the small ones came from the hub directly.
    const cdn = hub.since(from).filter((r) => r.server === "cdn");
    expect(cdn.map((r) => r.file).sort()).toEqual(["model.safetensors", "tokenizer.json"]);
    const done = events.find((e) => e.event === "done" && e.file === "model.safetensors");
    const size = statSync(join(tinyDir, "model.safetensors")).size;
    expect(done).toEqual({ event: "done", file: "model.safetensors", bytes: size, total: size });

    const [got, want] = await Promise.all([loadCheckpoint(dir), loadCheckpoint(tinyDir)]);
    try {
      expect(got.contentHash).toBe(want.contentHash);
      expect(got.tensorNames()).toEqual(want.tensorNames());
    } finally {
      await Promise.all([got.close(), want.close()]);
    }
    const manifest = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), "utf8"));
    expect(manifest.commit).toBe("a".repeat(40));
    expect(manifest.files["model.safetensors"]).toEqual({
      size,
      sha256: sha256(join(tinyDir, "model.safetensors")),
      commit: "a".repeat(40),
    });

    const again = hub.log.length;
    const second = await downloadFromHub({ repo: "openbmb/tiny-a", endpoint: hub.endpoint, dir });
    expect(second).toBe(dir);
    expect(hub.since(again).map((r) => r.path)).toEqual(["/api/models/openbmb/tiny-a/revision/main?blobs=true"]);
  });

  it("downloads a sharded repository: the index and every shard it lists", async () => {
    const { dir } = await download("openbmb/mini");
    expect(readdirSync(dir).sort()).toEqual(
      [
        MANIFEST_FILE,
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        SHARD1,
        SHARD2,
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
      ].sort(),
    );
    for (const f of [SHARD1, SHARD2, "model.safetensors.index.json"]) {
      expect(sha256(join(dir, f)), f).toBe(sha256(join(miniDir, f)));
    }
    const [got, want] = await Promise.all([loadCheckpoint(dir), loadCheckpoint(miniDir)]);
    try {
      expect(got.contentHash).toBe(want.contentHash);
      const name = got.tensorNames().at(-1) as string;
      expect(await got.readTensor(name)).toEqual(await want.readTensor(name));
    } finally {
      await Promise.all([got.close(), want.close()]);
    }
  });

  it("sends the token to the hub only, never to the CDN; 401 without it, and never prints it", async () => {
    const from = hub.log.length;
    await download("openbmb/mini-gated", { token: TOKEN });
    const log = hub.since(from);
    const hubAuth = new Set(log.filter((r) => r.server === "hub").map((r) => r.authorization));
    expect(hubAuth).toEqual(new Set([`Bearer ${TOKEN}`]));
    const cdn = log.filter((r) => r.server === "cdn");
    expect(cdn.length).toBe(3); // two shards + tokenizer.json
    expect(cdn.every((r) => r.authorization === null)).toBe(true);

    const noToken = await rejection(download("openbmb/mini-gated"));
    expect(noToken.code).toBe("auth");
    expect(noToken.message).toMatch(/^openbmb\/mini-gated@main: gated or private repository: set HF_TOKEN/);
    const wrong = await rejection(download("openbmb/mini-gated", { token: "hf_wrong_456" }));
    expect(wrong.code).toBe("auth");
    expect(wrong.message).toContain("set HF_TOKEN (the token given was refused");
    expect(wrong.message).not.toContain("hf_wrong_456");
  });

  it("404: unknown repository or revision; a repository without safetensors", async () => {
    const repo = await rejection(download("openbmb/nope"));
    expect(repo.code).toBe("not-found");
    expect(repo.message).toBe(
      "openbmb/nope@main: repository or revision not found (HTTP 404) (Hub: Repository openbmb/nope not found)",
    );
    const rev = await rejection(download("openbmb/mini", { revision: "v9" }));
    expect(rev.code).toBe("not-found");
    expect(rev.message).toBe("openbmb/mini@v9: revision not found (HTTP 404) (Hub: Invalid rev id: v9)");
    const none = await rejection(download("openbmb/no-weights"));
    expect(none.code).toBe("unsupported");
    expect(none.message).toContain("openbmb/no-weights@main: no safetensors weights");
    expect(hub.log.filter((r) => r.file === "pytorch_model.bin")).toEqual([]);
  });

  it("resumes a file whose connection was cut, with a Range request", async () => {
    const size = statSync(join(miniDir, SHARD1)).size;
    const cutAt = Math.floor(size / 2);
    hub.faults = { cut: { file: SHARD1, after: cutAt } };
    const from = hub.log.length;
    const { dir, events } = await download("openbmb/mini");
    expect(sha256(join(dir, SHARD1))).toBe(sha256(join(miniDir, SHARD1)));
    const tries = hub.since(from).filter((r) => r.server === "cdn" && r.file === SHARD1);
    expect(tries.length).toBe(2);
    expect(tries[0]?.range).toBe(null);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(tries[1]?.range ?? "")?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(cutAt);
    expect(tries[1]?.status).toBe(206);
    expect(events.filter((e) => e.event === "retry").map((e) => "file" in e && e.file)).toEqual([SHARD1]);
  });

  it("a corrupted byte fails the sha256 check and leaves no file", async () => {
    hub.faults = { corrupt: { file: SHARD2, offset: 1000 } };
    const dir = outDir();
    try {
      const err = await rejection(download("openbmb/mini", { dir }));
      expect(err.code).toBe("integrity");
      expect(err.message).toMatch(new RegExp(`^openbmb/mini/${SHARD2}: sha256 mismatch: expected [0-9a-f]{64}, got`));
    } finally {
      hub.faults = {};
    }
    expect(existsSync(join(dir, SHARD2))).toBe(false);
    expect(existsSync(join(dir, `${SHARD2}.incomplete`))).toBe(false);
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
  });

  it("abort stops promptly, keeps the .incomplete file, and the next run resumes it", async () => {
    const size = statSync(join(miniDir, SHARD1)).size;
    hub.faults = { stall: { file: SHARD1, after: Math.floor(size / 2) } };
    const dir = outDir();
    const ctl = new AbortController();
    const err = await rejection(
      download("openbmb/mini", {
        dir,
        signal: ctl.signal,
        onProgress: (p) => {
          if (p.event === "progress" && p.file === SHARD1 && p.bytes > 0) ctl.abort();
        },
      }),
    );
    hub.faults = {};
    expect(err.code).toBe("aborted");
    expect(existsSync(join(dir, SHARD1))).toBe(false);
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    const kept = statSync(join(dir, `${SHARD1}.incomplete`)).size;
    expect(kept).toBeGreaterThan(0);
    // The client closed the stalled connection.
    await Promise.all(hub.stalled);

    const from = hub.log.length;
    await download("openbmb/mini", { dir });
    expect(sha256(join(dir, SHARD1))).toBe(sha256(join(miniDir, SHARD1)));
    expect(existsSync(join(dir, `${SHARD1}.incomplete`))).toBe(false);
    const resumed = hub.since(from).filter((r) => r.server === "cdn" && r.file === SHARD1);
    expect(resumed.map((r) => [r.range, r.status])).toEqual([[`bytes=${kept}-`, 206]]);
  });

  it("a connection that stalls is dropped after idleTimeoutMs and retried (resuming), then reported", async () => {
    const size = statSync(join(miniDir, SHARD1)).size;
    const half = Math.floor(size / 2);
    hub.faults = { stall: { file: SHARD1, after: half } };
    const from = hub.log.length;
    const dir = outDir();
    try {
      const err = await rejection(download("openbmb/mini", { dir, idleTimeoutMs: 300 }));
      expect(err.code).toBe("network");
      expect(err.message).toBe(`openbmb/mini/${SHARD1}: no data for 300 ms`);
    } finally {
      hub.faults = {};
    }
    const tries = hub.since(from).filter((r) => r.server === "cdn" && r.file === SHARD1);
    expect(tries.map((r) => r.range)).toEqual([null, `bytes=${half}-`, `bytes=${half}-`]);
    expect(statSync(join(dir, `${SHARD1}.incomplete`)).size).toBe(half);
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
  });

  it("a new commit re-checks files: LFS files with the same sha256 are not transferred again", async () => {
    const { dir } = await download("openbmb/mini");
    hub.repos["openbmb/mini"] = {
      ...(hub.repos["openbmb/mini"] as NonNullable<(typeof hub.repos)[string]>),
      sha: "e".repeat(40),
    };
    try {
      const from = hub.log.length;
      await download("openbmb/mini", { dir });
      const log = hub.since(from);
      expect(log.filter((r) => r.server === "cdn")).toEqual([]);
      expect(log.filter((r) => r.file === SHARD1).map((r) => r.status)).toEqual([302]);
      expect(JSON.parse(readFileSync(join(dir, MANIFEST_FILE), "utf8")).files[SHARD1].commit).toBe("e".repeat(40));
    } finally {
      (hub.repos["openbmb/mini"] as { sha: string }).sha = "b".repeat(40);
    }
  });

  it("waits while a live process holds the directory lock; takes over a dead one's", async () => {
    const dir = outDir();
    mkdirSync(dir);
    const lock = join(dir, LOCK_FILE);
    writeFileSync(lock, JSON.stringify({ pid: process.pid, hostname: hostname(), since: "" }));
    const from = hub.log.length;
    let waiting: () => void = () => {};
    const waited = new Promise<void>((r) => {
      waiting = r;
    });
    const run = download("openbmb/mini", {
      dir,
      onProgress: (p) => {
        if (p.event === "waiting") waiting();
      },
    });
    await waited;
    expect(hub.since(from)).toEqual([]);
    unlinkSync(lock);
    await run;
    expect(existsSync(join(dir, SHARD2))).toBe(true);

    const dead = spawnSync(process.execPath, ["-e", ""]).pid as number;
    const dir2 = outDir();
    mkdirSync(dir2);
    writeFileSync(join(dir2, LOCK_FILE), JSON.stringify({ pid: dead, hostname: hostname(), since: "" }));
    const { events } = await download("openbmb/mini", { dir: dir2 });
    expect(events.filter((e) => e.event === "waiting")).toEqual([]);
    expect(existsSync(join(dir2, LOCK_FILE))).toBe(false);
  });
});
