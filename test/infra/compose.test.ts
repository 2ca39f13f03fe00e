/**
 * compose.yaml (and the compose.gpu.yaml override) without a docker engine: the structure against a
 * closed schema of the Compose keys used, each service built from its Dockerfile with the ports that
 * Dockerfile exposes, the edge wired to the backends' service names and ports, the shared volume, and every
 * environment value (defaults interpolated as `docker compose` would) accepted by the service's own config
 * parser.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { loadConfig as edgeConfig } from "../../edge/src/config";
import { loadConfig as gpuConfig } from "../../gpu-service/src/config";
import { parseConfig as preprocessConfig } from "../../preprocess/src/config";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
// biome-ignore lint/suspicious/noExplicitAny: compose files are walked as untyped YAML; the schema checks them
type Obj = Record<string, any>;
const compose = parseYaml(readFileSync(join(REPO, "compose.yaml"), "utf8")) as Obj;
const gpuOverride = parseYaml(readFileSync(join(REPO, "compose.gpu.yaml"), "utf8")) as Obj;

const ajv = new Ajv({ allErrors: true, strict: true });
const str = { type: "string" };
const service = {
  type: "object",
  additionalProperties: false,
  properties: {
    build: {
      type: "object",
      additionalProperties: false,
      required: ["context", "dockerfile"],
      properties: { context: str, dockerfile: str },
    },
    image: str,
    environment: { type: "object", additionalProperties: str },
    ports: { type: "array", items: { type: "string", pattern: "^(\\$\\{[A-Z_]+(:-[0-9]+)?\\}|[0-9]+):[0-9]+$" } },
    volumes: { type: "array", items: { type: "string", pattern: "^[a-z0-9-]+:/[^:]+(:ro)?$" } },
    depends_on: { type: "array", items: str },
    stop_grace_period: { type: "string", pattern: "^[0-9]+s$" },
    restart: { enum: ["no", "always", "on-failure", "unless-stopped"] },
    deploy: {
      type: "object",
      additionalProperties: false,
      properties: {
        resources: {
          type: "object",
          additionalProperties: false,
          properties: {
            reservations: {
              type: "object",
              additionalProperties: false,
              properties: {
                devices: {
                  type: "array",
                  items: {
                    type: "object",
                    additionalProperties: false,
                    required: ["capabilities"],
                    properties: {
                      driver: str,
                      count: { type: "integer", minimum: 1 },
                      capabilities: { type: "array", items: str },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};
const validateCompose = ajv.compile({
  type: "object",
  additionalProperties: false,
  required: ["services"],
  properties: {
    name: { type: "string", pattern: "^[a-z0-9][a-z0-9_-]*$" },
    services: { type: "object", additionalProperties: service },
    volumes: { type: "object", additionalProperties: { type: "null" } },
  },
});

/** `${NAME:-default}` / `${NAME}` interpolated from `vars`, the way docker compose does. */
function interpolate(value: string, vars: Record<string, string> = {}): string {
  return value.replace(/\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, def?: string) =>
    vars[name] ? vars[name] : (def ?? ""),
  );
}

function envOf(svc: string, vars: Record<string, string> = {}): Record<string, string> {
  return Object.fromEntries(
    Object.entries(compose.services[svc].environment as Record<string, string>).map(([k, v]) => [
      k,
      interpolate(v, vars),
    ]),
  );
}

/** Ports a Dockerfile EXPOSEs. */
function exposed(dockerfile: string): string[] {
  const text = readFileSync(join(REPO, dockerfile), "utf8");
  return [...text.matchAll(/^EXPOSE (.+)$/gm)].flatMap((m) => (m[1] as string).trim().split(/\s+/));
}

describe("docker compose", () => {
  it("is valid Compose with only the keys it means to use (and the check rejects a typo)", () => {
    expect(validateCompose(compose), ajv.errorsText(validateCompose.errors)).toBe(true);
    expect(validateCompose(gpuOverride), ajv.errorsText(validateCompose.errors)).toBe(true);
    const typo = structuredClone(compose);
    typo.services.edge.depend_on = ["preprocess"];
    expect(validateCompose(typo)).toBe(false);
  });

  it("builds each service from its Dockerfile in the repository root, on the ports it exposes", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["edge", "gpu-service", "preprocess"]);
    for (const [name, svc] of Object.entries(compose.services as Record<string, Obj>)) {
      expect(svc.build).toEqual({ context: ".", dockerfile: `${name}/Dockerfile` });
      expect(existsSync(join(REPO, svc.build.dockerfile)), name).toBe(true);
    }
    expect(exposed("preprocess/Dockerfile")).toEqual(expect.arrayContaining(["50061", "9461"]));
    expect(envOf("preprocess")).toMatchObject({ PREPROCESS_PORT: "50061", PREPROCESS_METRICS_PORT: "9461" });
    expect(exposed("gpu-service/Dockerfile")).toEqual(expect.arrayContaining(["50062", "9462"]));
    expect(envOf("gpu-service")).toMatchObject({ GPU_SERVICE_PORT: "50062", GPU_METRICS_PORT: "9462" });
    expect(exposed("edge/Dockerfile")).toContain("8080");
    expect(compose.services.edge.ports).toHaveLength(1);
    expect(interpolate(compose.services.edge.ports[0])).toBe("8080:8080");
    expect(interpolate(compose.services.edge.ports[0], { PORT: "9090" })).toBe("9090:8080");
  });

  it("wires the edge to the backends by service name, with the gpu-service's metrics on the edge's /metrics", () => {
    const edge = edgeConfig(envOf("edge"));
    const pre = preprocessConfig(envOf("preprocess"));
    const gpu = gpuConfig(envOf("gpu-service"));
    expect(edge.preprocessUrl).toBe(`preprocess:${pre.port}`);
    expect(edge.gpuServiceUrls).toEqual([`gpu-service:${gpu.port}`]);
    expect(edge.gpuMetricsUrls).toEqual([`http://gpu-service:${gpu.metricsPort}/metrics`]);
    expect(edge.port).toBe(8080);
    expect(compose.services.edge.depends_on).toEqual(["preprocess", "gpu-service"]);
  });

  it("keeps the model, hub cache and built graphs in a named volume the preprocess service reads", () => {
    expect(Object.keys(compose.volumes)).toEqual(["gpu-cache"]);
    expect(compose.services["gpu-service"].volumes).toEqual(["gpu-cache:/app/.cache"]);
    expect(compose.services.preprocess.volumes).toEqual(["gpu-cache:/app/.cache:ro"]);
    const gpu = gpuConfig(envOf("gpu-service", { MODEL_ID: "openbmb/MiniCPM-V-2_6" }));
    expect(gpu).toMatchObject({
      modelId: "openbmb/MiniCPM-V-2_6",
      hfHubCache: "/app/.cache/huggingface/hub",
      cacheDir: "/app/.cache",
      executionProvider: "cpu",
      weights: "f32",
      kvCacheMemoryFraction: 0,
      hfHubOffline: false,
    });
    expect(preprocessConfig(envOf("preprocess")).modelDir).toBe("/app/.cache/checkpoints/tiny-a");
  });

  it("accepts the documented variables, and the GPU override gives the gpu-service one NVIDIA GPU", () => {
    const vars = { EXECUTION_PROVIDER: "cuda", WEIGHTS: "int4", KV_CACHE_MEMORY_FRACTION: "0.8", HF_HUB_OFFLINE: "1" };
    expect(gpuConfig(envOf("gpu-service", vars))).toMatchObject({
      executionProvider: "cuda",
      weights: "int4",
      kvCacheMemoryFraction: 0.8,
      hfHubOffline: true,
    });
    expect(() => gpuConfig(envOf("gpu-service", { WEIGHTS: "bf16" }))).toThrow(/WEIGHTS must be one of/);
    const g = gpuOverride.services["gpu-service"];
    expect(g.deploy.resources.reservations.devices).toEqual([{ driver: "nvidia", count: 1, capabilities: ["gpu"] }]);
    expect(interpolate(g.environment.EXECUTION_PROVIDER)).toBe("cuda");
  });
});
