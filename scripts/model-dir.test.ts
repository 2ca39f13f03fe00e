import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DEFAULT_CACHE_DIR, type HubDownloadOptions, HubError } from "../gpu-service/src/checkpoint";
import { isAbortedDownload, modelSource, resolveModelDir } from "./model-dir";

/** Fakes that record what they were asked. */
function fakes() {
  const calls: { download: HubDownloadOptions[]; tiny: string[] } = { download: [], tiny: [] };
  return {
    calls,
    download: async (o: HubDownloadOptions) => {
      calls.download.push(o);
      return `downloaded:${o.dir}`;
    },
    ensureTiny: async (cacheDir: string) => {
      calls.tiny.push(cacheDir);
      return `tiny:${cacheDir}`;
    },
  };
}

describe("resolveModelDir (npm start)", () => {
  it("MODEL_DIR wins, even with MODEL_ID set; nothing is downloaded or generated", async () => {
    const f = fakes();
    const r = await resolveModelDir({ MODEL_DIR: "/models/x", MODEL_ID: "openbmb/MiniCPM-V-2_6" }, f);
    expect(r).toEqual({ dir: "/models/x", source: { kind: "dir", dir: "/models/x" } });
    expect(f.calls).toEqual({ download: [], tiny: [] });
  });

  it("MODEL_ID downloads into <CACHE_DIR>/hub/<org>/<name>/<revision> with HF_TOKEN and HF_ENDPOINT", async () => {
    const f = fakes();
    const signal = new AbortController().signal;
    const env = {
      MODEL_ID: "openbmb/MiniCPM-V-2_6",
      MODEL_REVISION: "v1.0",
      HF_TOKEN: "hf_x",
      HF_ENDPOINT: "http://127.0.0.1:1",
      CACHE_DIR: "/data/cache",
    };
    const r = await resolveModelDir(env, { ...f, signal });
    const dir = "/data/cache/hub/openbmb/MiniCPM-V-2_6/v1.0";
    expect(r.dir).toBe(`downloaded:${dir}`);
    expect(f.calls.download).toEqual([
      { repo: "openbmb/MiniCPM-V-2_6", revision: "v1.0", dir, endpoint: "http://127.0.0.1:1", token: "hf_x", signal },
    ]);
    expect(f.calls.tiny).toEqual([]);
  });

  it("MODEL_ID alone: revision main under <repo>/.cache, no token or endpoint", () => {
    expect(modelSource({ MODEL_ID: "o/r" })).toEqual({
      kind: "hub",
      options: { repo: "o/r", revision: "main", dir: join(DEFAULT_CACHE_DIR, "hub/o/r/main") },
    });
  });

  it("neither: the tiny-a checkpoint in CACHE_DIR (or .cache)", async () => {
    const f = fakes();
    expect((await resolveModelDir({}, f)).dir).toBe(`tiny:${DEFAULT_CACHE_DIR}`);
    expect((await resolveModelDir({ CACHE_DIR: "/c" }, f)).dir).toBe("tiny:/c");
    expect(f.calls.download).toEqual([]);
  });

  it("a malformed MODEL_ID is an error naming the variable", () => {
    expect(() => modelSource({ MODEL_ID: "MiniCPM-V-2_6" })).toThrow(
      'MODEL_ID / MODEL_REVISION: repo must be <org>/<name> (letters, digits, . _ -), got "MiniCPM-V-2_6"',
    );
  });

  it("tells an aborted download from a failure", () => {
    expect(isAbortedDownload(new HubError("aborted", "x: download aborted"))).toBe(true);
    expect(isAbortedDownload(new HubError("network", "x"))).toBe(false);
    expect(isAbortedDownload(new Error("x"))).toBe(false);
  });
});
