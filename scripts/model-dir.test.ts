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
      return `downloaded:${o.cacheDir}`;
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

  it("MODEL_ID: a snapshot in the hub cache (HF_HUB_CACHE), with HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE", async () => {
    const f = fakes();
    const signal = new AbortController().signal;
    const env = {
      MODEL_ID: "openbmb/MiniCPM-V-2_6",
      MODEL_REVISION: "v1.0",
      HF_TOKEN: "hf_x",
      HF_ENDPOINT: "http://127.0.0.1:1",
      HF_HUB_CACHE: "/data/hub",
      HF_HUB_OFFLINE: "1",
    };
    const r = await resolveModelDir(env, { ...f, signal });
    expect(r.dir).toBe("downloaded:/data/hub");
    expect(f.calls.download).toEqual([
      {
        repo: "openbmb/MiniCPM-V-2_6",
        revision: "v1.0",
        cacheDir: "/data/hub",
        offline: true,
        endpoint: "http://127.0.0.1:1",
        token: "hf_x",
        signal,
      },
    ]);
    expect(f.calls.tiny).toEqual([]);
  });

  it("MODEL_ID alone: revision main in $HF_HOME/hub, online, no token or endpoint", () => {
    expect(modelSource({ MODEL_ID: "o/r", HF_HOME: "/hf" })).toEqual({
      kind: "hub",
      options: { repo: "o/r", revision: "main", cacheDir: join("/hf", "hub"), offline: false },
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
