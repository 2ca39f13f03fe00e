/**
 * Where `npm start` takes the checkpoint from, decided from the environment:
 *
 *   MODEL_DIR set            -> that directory, as is
 *   else MODEL_ID set        -> its snapshot in the Hugging Face hub cache (HF_HUB_CACHE, HF_HOME, default
 *                               ~/.cache/huggingface/hub), fetched from the Hub first when incomplete
 *                               (MODEL_REVISION, HF_TOKEN, HF_ENDPOINT; HF_HUB_OFFLINE: the cache only)
 *   else                     -> the generated tiny-a checkpoint (random weights)
 */
import {
  DEFAULT_CACHE_DIR,
  downloadFromHub,
  ensureTinyCheckpoint,
  type HubDownloadOptions,
  HubError,
  type HubProgress,
  hubCacheDir,
  hubEnv,
  validateRepo,
  validateRevision,
} from "../gpu-service/src/checkpoint";

/** The checkpoint source `npm start` uses. */
export type ModelSource =
  | { kind: "dir"; dir: string }
  | { kind: "hub"; options: HubDownloadOptions & { revision: string; cacheDir: string; offline: boolean } }
  | { kind: "tiny"; cacheDir: string };

type Env = Record<string, string | undefined>;

/**
 * Decides the source from `MODEL_DIR`, `MODEL_ID`, `MODEL_REVISION`, `HF_TOKEN`, `HF_ENDPOINT`, `HF_HUB_CACHE`,
 * `HF_HOME`, `HF_HUB_OFFLINE` and `CACHE_DIR` (the tiny checkpoint's home).
 */
export function modelSource(env: Env): ModelSource {
  if (env.MODEL_DIR) return { kind: "dir", dir: env.MODEL_DIR };
  if (!env.MODEL_ID) return { kind: "tiny", cacheDir: env.CACHE_DIR || DEFAULT_CACHE_DIR };
  const revision = env.MODEL_REVISION || "main";
  try {
    validateRepo(env.MODEL_ID);
    validateRevision(revision);
  } catch (err) {
    throw new Error(`MODEL_ID / MODEL_REVISION: ${(err as Error).message}`);
  }
  const offline = ["1", "true", "yes", "on"].includes((env.HF_HUB_OFFLINE ?? "").toLowerCase());
  return {
    kind: "hub",
    options: { repo: env.MODEL_ID, revision, cacheDir: hubCacheDir(env), offline, ...hubEnv(env) },
  };
}

/**
 * Resolves the checkpoint directory to serve: downloads it first when the source is the Hub
 * (`signal` stops the download, leaving it resumable). `download` and `ensureTiny` are for tests.
 */
export async function resolveModelDir(
  env: Env,
  opts: {
    signal?: AbortSignal;
    onProgress?: (p: HubProgress) => void;
    download?: (o: HubDownloadOptions) => Promise<string>;
    ensureTiny?: (cacheDir: string) => Promise<string>;
  } = {},
): Promise<{ dir: string; source: ModelSource }> {
  const source = modelSource(env);
  switch (source.kind) {
    case "dir":
      return { dir: source.dir, source };
    case "tiny":
      return { dir: await (opts.ensureTiny ?? ensureTinyCheckpoint)(source.cacheDir), source };
    case "hub": {
      const download = opts.download ?? downloadFromHub;
      const dir = await download({
        ...source.options,
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      });
      return { dir, source };
    }
  }
}

/** True when `err` is a download stopped by its signal (Ctrl-C), not a failure. */
export function isAbortedDownload(err: unknown): boolean {
  return err instanceof HubError && err.code === "aborted";
}
