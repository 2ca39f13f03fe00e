/**
 * Finding and running the ffmpeg binary. Every child is killed on abort or timeout and always awaited,
 * so no ffmpeg process outlives the request that started it.
 */

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, join } from "node:path";
import { abortError, PreprocessError } from "../errors";

/** npm packages that may ship an ffmpeg binary, in order of preference. */
export const FFMPEG_PACKAGES = ["ffmpeg-static", "@ffmpeg-installer/ffmpeg"] as const;

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function packageBinary(name: string): string | undefined {
  try {
    const mod = createRequire(import.meta.url)(name) as string | { path?: string; default?: string };
    const path = typeof mod === "string" ? mod : (mod.path ?? mod.default);
    return typeof path === "string" ? path : undefined;
  } catch {
    return undefined;
  }
}

/** `ffmpeg` in the directories of `pathEnv` (a PATH value), if any is executable. */
export function ffmpegOnPath(pathEnv: string | undefined): string | undefined {
  for (const dir of (pathEnv ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, "ffmpeg");
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/**
 * The ffmpeg binary to use: `explicitPath` (FFMPEG_PATH) when it is executable, else `ffmpeg` on `pathEnv`
 * (the system's, kept up to date by its package manager: it decodes untrusted input), else the first npm
 * package in `packages` whose binary exists (a static build, the fallback for a bare machine). Throws
 * "ffmpeg not found" listing what was tried.
 */
export function resolveFfmpegPath(
  explicitPath: string | undefined,
  packages: readonly string[] = FFMPEG_PACKAGES,
  pathEnv?: string,
): string {
  const tried: string[] = [];
  if (explicitPath) {
    if (isExecutable(explicitPath)) return explicitPath;
    tried.push(`FFMPEG_PATH=${explicitPath} (not an executable file)`);
  }
  const system = ffmpegOnPath(pathEnv);
  if (system) return system;
  tried.push("ffmpeg on PATH (none)");
  for (const name of packages) {
    const path = packageBinary(name);
    if (path && isExecutable(path)) return path;
    tried.push(path ? `${name} (${path} missing)` : `${name} (not installed)`);
  }
  throw new PreprocessError("unavailable", `ffmpeg not found; tried ${tried.join(", ")}`);
}

/** The first line of `ffmpeg -version` ("ffmpeg version 5.1.6-0+deb12u1 ..."), for the start-up log. */
export function ffmpegVersion(ffmpeg: string): string {
  try {
    const out = execFileSync(ffmpeg, ["-hide_banner", "-version"], { encoding: "utf8", timeout: 10_000 });
    return /ffmpeg version (\S+)/.exec(out)?.[1] ?? (out.split("\n")[0] ?? "").trim();
  } catch (err) {
    return `unknown (${(err as Error).message})`;
  }
}

/** Options for one ffmpeg run. */
export interface FfmpegRun {
  readonly ffmpeg: string;
  readonly args: readonly string[];
  /** Written to stdin (the input is `pipe:0`); stdin is closed when omitted. */
  readonly input?: Uint8Array | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Kills ffmpeg after this many milliseconds. */
  readonly timeoutMs: number;
}

/** A running ffmpeg: its stdout, and `done`, which settles once the process has exited. */
export interface FfmpegProcess {
  readonly child: ChildProcess;
  readonly stdout: NodeJS.ReadableStream;
  /** Resolves with stderr on exit code 0; rejects with a PreprocessError otherwise. */
  readonly done: Promise<string>;
  /** Kills the process (if still running) and waits until it has exited. */
  stop(): Promise<void>;
}

/** Number of live ffmpeg children started here (tests assert it returns to 0). */
let live = 0;
export function liveFfmpegProcesses(): number {
  return live;
}

const STDERR_KEEP = 64 * 1024;

/** Starts ffmpeg with `args`; see FfmpegRun. */
export function startFfmpeg(run: FfmpegRun): FfmpegProcess {
  if (run.signal?.aborted) throw abortError(run.signal);
  const child = spawn(run.ffmpeg, ["-hide_banner", "-nostdin", ...run.args], {
    stdio: [run.input ? "pipe" : "ignore", "pipe", "pipe"],
  });
  live++;
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (s: string) => {
    stderr = (stderr + s).slice(-STDERR_KEEP);
  });
  let killedFor: PreprocessError | undefined;
  const kill = (why: PreprocessError) => {
    if (child.exitCode === null && child.signalCode === null) {
      killedFor ??= why;
      child.kill("SIGKILL");
    }
  };
  const onAbort = () => kill(abortError(run.signal as AbortSignal));
  run.signal?.addEventListener("abort", onAbort, { once: true });
  const timer = setTimeout(
    () => kill(new PreprocessError("deadline_exceeded", `video decoding took longer than ${run.timeoutMs} ms`)),
    run.timeoutMs,
  );
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once("error", (err) => {
      reject(
        new PreprocessError(
          "unavailable",
          "video decoding is unavailable on this server",
          `cannot run ffmpeg at ${run.ffmpeg}: ${err.message}`,
        ),
      );
    });
    child.once("close", (code) => resolve(code));
  }).finally(() => {
    live--;
    clearTimeout(timer);
    run.signal?.removeEventListener("abort", onAbort);
  });
  const done = exited.then((code) => {
    if (killedFor) throw killedFor;
    if (code !== 0) {
      // NOTE: ffmpeg's stderr names paths and parser internals: it goes to the log (detail), never to the client.
      const tail = stderr.trim().split("\n").slice(-3).join(" | ");
      throw new PreprocessError(
        "invalid_argument",
        "the video could not be decoded (corrupt data or an unsupported codec)",
        `ffmpeg exit ${code}: ${tail}`,
      );
    }
    return stderr;
  });
  // Unhandled rejections are the caller's business through `done`; keep this one quiet.
  done.catch(() => {});
  if (run.input && child.stdin) {
    // ffmpeg may stop reading early (e.g. after an error): ignore EPIPE.
    child.stdin.on("error", () => {});
    child.stdin.end(Buffer.from(run.input.buffer, run.input.byteOffset, run.input.byteLength));
  }
  return {
    child,
    stdout: child.stdout as NodeJS.ReadableStream,
    done,
    stop: async () => {
      kill(new PreprocessError("cancelled", "ffmpeg was stopped"));
      await exited.catch(() => {});
    },
  };
}
