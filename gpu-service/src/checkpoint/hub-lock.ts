/**
 * A lock file that keeps two processes (two `npm start`s, a CLI and a server) from writing the same
 * download directory. Created with O_EXCL; holds `{ pid, hostname, since }`. A lock left by a process
 * that died on this host is taken over; any other holder is waited for.
 */

import { open, readFile, stat, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import { setTimeout as delay } from "node:timers/promises";

/** Who holds a lock, as written in the lock file. */
export interface LockHolder {
  pid: number;
  hostname: string;
  since: string;
}

/** A lock file that could not be parsed is considered abandoned after this long (its writer died mid-write). */
const UNREADABLE_STALE_MS = 10_000;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function readHolder(path: string): Promise<LockHolder | "missing" | "unreadable"> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "missing";
    throw err;
  }
  try {
    const v = JSON.parse(text) as Partial<LockHolder>;
    if (typeof v.pid === "number" && typeof v.hostname === "string") {
      return { pid: v.pid, hostname: v.hostname, since: String(v.since ?? "") };
    }
  } catch {
    // fall through
  }
  return "unreadable";
}

async function isStale(path: string, holder: LockHolder | "unreadable"): Promise<boolean> {
  if (holder === "unreadable") {
    try {
      return Date.now() - (await stat(path)).mtimeMs > UNREADABLE_STALE_MS;
    } catch {
      return true;
    }
  }
  return holder.hostname === hostname() && !isAlive(holder.pid);
}

/**
 * Takes the lock at `path`, waiting (polling every `pollMs`) while a live process holds it.
 * `onWait` is called once, with the holder, when the lock is busy. Rejects with the signal's reason
 * when `signal` aborts while waiting. Returns the release function (idempotent).
 * NOTE: a lock held by a process on another host (a shared volume) cannot be checked and is always
 * waited for; delete the file by hand if that host is gone.
 */
export async function acquireDirLock(
  path: string,
  opts: { signal?: AbortSignal; pollMs?: number; onWait?: (holder: string) => void } = {},
): Promise<() => Promise<void>> {
  const me: LockHolder = { pid: process.pid, hostname: hostname(), since: new Date().toISOString() };
  let notified = false;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const fh = await open(path, "wx");
      try {
        await fh.writeFile(JSON.stringify(me));
      } finally {
        await fh.close();
      }
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        await unlink(path).catch(() => {});
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = await readHolder(path);
    if (holder === "missing") continue;
    if (await isStale(path, holder)) {
      await unlink(path).catch(() => {});
      continue;
    }
    if (!notified) {
      notified = true;
      opts.onWait?.(holder === "unreadable" ? "unknown" : `pid ${holder.pid} on ${holder.hostname}`);
    }
    await delay(opts.pollMs ?? 500, undefined, opts.signal ? { signal: opts.signal } : {});
  }
}
