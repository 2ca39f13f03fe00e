import { randomBytes } from "node:crypto";
import { access, mkdir, rename, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { generateCheckpoint } from "./generator";

/** `<repo>/.cache`: the default cache folder. */
export const DEFAULT_CACHE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../../.cache");

const inFlight = new Map<string, Promise<string>>();

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Generates the `tiny-a` checkpoint once into `<cacheDir>/checkpoints/tiny-a` and returns that
 * directory. The checkpoint is written to a temporary sibling and renamed into place, so the
 * directory is either absent or complete; concurrent callers (in this process or others) are safe.
 */
export function ensureTinyCheckpoint(cacheDir: string = DEFAULT_CACHE_DIR): Promise<string> {
  const dir = join(resolve(cacheDir), "checkpoints", "tiny-a");
  const pending = inFlight.get(dir);
  if (pending) return pending;
  const p = (async () => {
    if (await exists(join(dir, "config.json"))) return dir;
    await mkdir(dirname(dir), { recursive: true });
    const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    try {
      await generateCheckpoint({ config: "tiny-a", outDir: tmp });
      try {
        await rename(tmp, dir);
      } catch (err) {
        // Another process renamed its copy first: theirs is complete, use it.
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== "ENOTEMPTY" && code !== "EEXIST") || !(await exists(join(dir, "config.json")))) throw err;
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return dir;
  })();
  inFlight.set(dir, p);
  p.then(
    () => inFlight.delete(dir),
    () => inFlight.delete(dir),
  );
  return p;
}
