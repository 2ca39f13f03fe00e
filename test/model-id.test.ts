/**
 * MODEL_ID in the gpu-service itself (as a Kubernetes pod gets it): the checkpoint is fetched from the
 * loopback fake hub into the Hugging Face hub cache (HF_HUB_CACHE) in the standard layout, served, and a
 * second start with HF_HUB_OFFLINE serves the same snapshot without the Hub. `/health` on the metrics port
 * says what was loaded; while loading, progress lines say what is loading.
 */
import { lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTinyCheckpoint } from "../gpu-service/src/checkpoint";
import { FakeHub } from "../gpu-service/src/checkpoint/testing/fake-hub";
import { type ServiceProc, startGpu, stopProc, waitServing } from "./helpers/stack";

const SHA = "e".repeat(40);
let hub: FakeHub;
let cache: string;
const procs: ServiceProc[] = [];

beforeAll(async () => {
  const tiny = await ensureTinyCheckpoint();
  const files = Object.fromEntries(readdirSync(tiny).map((f) => [f, join(tiny, f)]));
  hub = await FakeHub.start({ "openbmb/tiny-a": { sha: SHA, files } });
  cache = mkdtempSync(join(tmpdir(), "model-id-hub-"));
});

afterAll(async () => {
  await Promise.all(procs.map((p) => stopProc(p, 5000)));
  await hub?.close();
  rmSync(cache, { recursive: true, force: true });
});

async function serve(env: Record<string, string>): Promise<{ health: Record<string, unknown>; log: string }> {
  const gpu = await startGpu("", {
    MODEL_DIR: "",
    MODEL_ID: "openbmb/tiny-a",
    HF_HUB_CACHE: cache,
    LOG_LEVEL: "info",
    ...env,
  });
  procs.push(gpu);
  await waitServing(gpu, 240_000);
  const res = await fetch(`http://127.0.0.1:${gpu.metricsPort}/health`);
  expect(res.status).toBe(200);
  const health = (await res.json()) as Record<string, unknown>;
  expect(await stopProc(gpu)).toBe(0);
  return { health, log: gpu.output() };
}

describe("MODEL_ID in the gpu-service", () => {
  it("downloads into the hub cache, serves the snapshot, and serves it again offline", async () => {
    const first = await serve({ HF_ENDPOINT: hub.endpoint });
    const snapshot = join(cache, "models--openbmb--tiny-a", "snapshots", SHA);
    expect(first.health).toMatchObject({ status: "ok", model: "tiny-a", model_dir: snapshot });
    expect(readFileSync(join(cache, "models--openbmb--tiny-a", "refs", "main"), "utf8")).toBe(SHA);
    expect(lstatSync(join(snapshot, "model.safetensors")).isSymbolicLink()).toBe(true);
    expect(first.log).toContain('"msg":"loading the model"');
    expect(first.log).toContain('"model_id":"openbmb/tiny-a"');
    expect(first.log).toMatch(/"task":"download model\.safetensors".*"msg":"progress"/);
    expect(first.log).toMatch(/"task":"checkpoint validation".*"finished":true/);

    const from = hub.log.length;
    const second = await serve({ HF_ENDPOINT: "http://127.0.0.1:1", HF_HUB_OFFLINE: "1" });
    expect(second.health).toMatchObject({ status: "ok", model_dir: snapshot });
    expect(hub.log.length).toBe(from);
  });
});
