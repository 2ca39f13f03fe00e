/**
 * Lints the three service Dockerfiles (no docker engine here, so nothing is built):
 * `dockerfile-utils` (the validator behind the VS Code Dockerfile language server) with every
 * rule raised to an error, plus this project's rules on the parsed AST (`dockerfile-ast`):
 * multi-stage, non-root numeric USER, HEALTHCHECK, exec-form `node` CMD for SIGTERM, pinned base
 * images, only the service's own workspace and native dependencies, no weights, and every COPY
 * source present in the repository and not excluded by .dockerignore. The gRPC health probe the
 * images use is run against a real grpc.health.v1 server.
 */
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createServer, type grpc, listen, shutdown } from "@minicpmv/proto/grpc";
import { DockerfileParser, type Instruction } from "dockerfile-ast";
import { ValidationSeverity, type ValidatorSettings, validate } from "dockerfile-utils";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthService, ServingStatus } from "../../proto/src/health";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const run = promisify(execFile);

const SERVICES = {
  edge: { workspace: "@minicpmv/edge", ports: ["8080"] },
  preprocess: { workspace: "@minicpmv/preprocess", ports: ["50061", "9461"] },
  "gpu-service": { workspace: "@minicpmv/gpu-service", ports: ["50062", "9462"] },
} as const;

const ALL_ERRORS: ValidatorSettings = {
  deprecatedMaintainer: ValidationSeverity.ERROR,
  directiveCasing: ValidationSeverity.ERROR,
  emptyContinuationLine: ValidationSeverity.ERROR,
  instructionCasing: ValidationSeverity.ERROR,
  instructionCmdMultiple: ValidationSeverity.ERROR,
  instructionEntrypointMultiple: ValidationSeverity.ERROR,
  instructionHealthcheckMultiple: ValidationSeverity.ERROR,
  instructionJSONInSingleQuotes: ValidationSeverity.ERROR,
  instructionWorkdirRelative: ValidationSeverity.ERROR,
};

/** .dockerignore semantics for the patterns we use: last matching line wins, `!` re-includes. */
function ignored(path: string, patterns: string[]): boolean {
  let out = false;
  for (const raw of patterns) {
    const negate = raw.startsWith("!");
    const p = negate ? raw.slice(1) : raw;
    const re = new RegExp(
      `^${p
        .replace(/[.+^${}()|[\]\\]/g, "\\$&")
        .replace(/\*\*\//g, "%DS%")
        .replace(/\*\*/g, "%S%")
        .replace(/\*/g, "[^/]*")
        .replace(/%DS%/g, "(.*/)?")
        .replace(/%S%/g, ".*")}(/.*)?$`,
    );
    if (re.test(path)) out = !negate;
  }
  return out;
}

const dockerignore = readFileSync(join(REPO, ".dockerignore"), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));

function stages(name: string): Instruction[][] {
  const df = DockerfileParser.parse(readFileSync(join(REPO, name, "Dockerfile"), "utf8"));
  const out: Instruction[][] = [];
  for (const ins of df.getInstructions()) {
    if (ins.getKeyword() === "FROM") out.push([]);
    out[out.length - 1]?.push(ins);
  }
  return out;
}

const text = (ins: Instruction) => ins.getArgumentsContent() ?? "";
/** Flag names (`--from`, `--start-period`, ...) of COPY and HEALTHCHECK instructions. */
const flags = (ins: Instruction) =>
  ((ins as unknown as { getFlags?: () => { getName(): string }[] }).getFlags?.() ?? []).map((f) => f.getName());

describe.each(Object.entries(SERVICES))("%s/Dockerfile", (name, svc) => {
  const src = readFileSync(join(REPO, name, "Dockerfile"), "utf8");
  const all = stages(name);
  const runtime = all[all.length - 1] as Instruction[];
  const of = (kw: string, list = runtime) => list.filter((i) => i.getKeyword() === kw);

  it("passes dockerfile-utils validation with every rule as an error", () => {
    expect(validate(src, ALL_ERRORS).map((d) => `${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  it("is multi-stage with a pinned base image per stage and a final stage named runtime", () => {
    expect(all.length).toBeGreaterThanOrEqual(2);
    expect(text(runtime[0] as Instruction)).toMatch(/ AS runtime$/);
    const instructions = DockerfileParser.parse(src).getInstructions();
    const firstFrom = instructions.findIndex((i) => i.getKeyword() === "FROM");
    const images = instructions
      .slice(0, firstFrom)
      .map((i) => text(i).split("="))
      .filter(([k]) => k?.endsWith("_IMAGE"));
    expect(images.length).toBeGreaterThan(0);
    for (const [k, v] of images) expect(v, k).toMatch(/^[\w./-]+:\d[\w.-]*$/); // a version tag, never latest
    for (const from of all.map((st) => text(st[0] as Instruction))) expect(from).toMatch(/^\$\{\w+_IMAGE\} AS \w+$/);
  });

  it("runs as a non-root numeric user with a health check and an exec-form node CMD", () => {
    const user = of("USER");
    expect(user.length).toBe(1);
    expect(text(user[0] as Instruction)).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    expect(of("HEALTHCHECK").length).toBe(1);
    expect(flags(of("HEALTHCHECK")[0] as Instruction)).toEqual(["interval", "timeout", "start-period", "retries"]);
    expect(text(of("STOPSIGNAL")[0] as Instruction)).toBe("SIGTERM");
    expect(JSON.parse(text(of("CMD")[0] as Instruction))).toEqual(["node", "--import", "tsx", "src/main.ts"]);
    expect(of("EXPOSE").flatMap((i) => text(i).split(/\s+/))).toEqual([...svc.ports]);
    expect(of("ENTRYPOINT")).toEqual([]);
  });

  it("installs only its own workspace's production dependencies and never copies weights", () => {
    const installs = all.flat().filter((i) => i.getKeyword() === "RUN" && text(i).includes("npm ci"));
    expect(installs.length).toBe(1);
    expect(text(installs[0] as Instruction)).toContain(`--omit=dev --workspace=${svc.workspace}`);
    expect(of("ADD", all.flat())).toEqual([]);
    for (const c of of("COPY", all.flat())) {
      expect(text(c)).not.toMatch(/safetensors|\.onnx|\.gguf|checkpoint|\.cache|models/i);
    }
    const runs = all
      .flat()
      .filter((i) => i.getKeyword() === "RUN")
      .map(text)
      .join("\n");
    if (name === "gpu-service") {
      expect(runs).toContain("rm -rf node_modules/sharp node_modules/@img node_modules/@ffmpeg-installer");
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell variable written in the Dockerfile
      expect(runs).toContain('ONNXRUNTIME_NODE_INSTALL="${ORT_INSTALL}" node script/install');
      expect(src).toMatch(/ARG RUNTIME_IMAGE=nvidia\/cuda:12\.[\d.]+-cudnn-runtime-/);
    } else {
      expect(runs).toContain("test ! -e node_modules/onnxruntime-node");
    }
    if (name === "edge") expect(runs).toContain("test ! -e node_modules/sharp");
    if (name === "preprocess") expect(runs).toContain('require("@ffmpeg-installer/ffmpeg").path');
  });

  it("copies only sources that exist and that .dockerignore lets through", () => {
    const problems: string[] = [];
    for (const c of of("COPY", all.flat())) {
      if (flags(c).includes("from")) continue;
      const parts = text(c).split(/\s+/).slice(0, -1);
      for (const p of parts) {
        const path = p.replace(/\/$/, "");
        if (!existsSync(join(REPO, path))) problems.push(`${path} does not exist`);
        if (ignored(path, dockerignore)) problems.push(`${path} is excluded by .dockerignore`);
      }
    }
    expect(problems).toEqual([]);
  });
});

describe("dockerfile-utils", () => {
  it("reports casing, relative WORKDIR and single-quoted JSON (the linter is live)", () => {
    const bad = "FROM node:20\nworkdir app\nCMD ['node']\n";
    expect(validate(bad, ALL_ERRORS).length).toBe(3);
  });
});

describe(".dockerignore", () => {
  it("keeps weights, node_modules, tests and the git history out of every build context", () => {
    for (const p of [
      "node_modules",
      "edge/node_modules",
      ".git",
      ".cache/checkpoints/tiny-a/model.safetensors",
      "gpu-service/src/x.test.ts",
      "models/MiniCPM-V-2_6/model-00001-of-00004.safetensors",
      "gpu-service/decoder.onnx",
      "test/infra/helm.test.ts",
      "infra/terraform/envs/example/main.tf",
    ]) {
      expect(ignored(p, dockerignore), p).toBe(true);
    }
    for (const p of [
      "edge/src/main.ts",
      "test/package.json",
      "bench/package.json",
      "infra/docker/grpc-health-probe.mjs",
    ]) {
      expect(ignored(p, dockerignore), p).toBe(false);
    }
  });
});

describe("infra/docker/grpc-health-probe.mjs", () => {
  const probe = join(REPO, "infra/docker/grpc-health-probe.mjs");
  let server: grpc.Server;
  let port = 0;
  const health = new HealthService(["minicpmv.v1.GenerationService"]);

  beforeAll(async () => {
    server = createServer();
    health.register(server);
    port = await listen(server, "127.0.0.1", 0);
  });
  afterAll(async () => {
    await shutdown(server, 1000);
  });

  const exitCode = async (...args: string[]) => {
    try {
      await run(process.execPath, [probe, ...args], { cwd: REPO, timeout: 20_000 });
      return 0;
    } catch (e) {
      return (e as { code: number }).code;
    }
  };

  it("exits 1 until the server reports SERVING, then 0; 1 for an unknown service or no server", async () => {
    expect(await exitCode(`127.0.0.1:${port}`)).toBe(1);
    health.set("", ServingStatus.SERVING);
    expect(await exitCode(`127.0.0.1:${port}`)).toBe(0);
    expect(await exitCode(`127.0.0.1:${port}`, "minicpmv.v1.GenerationService")).toBe(1);
    health.set("minicpmv.v1.GenerationService", ServingStatus.SERVING);
    expect(await exitCode(`127.0.0.1:${port}`, "minicpmv.v1.GenerationService")).toBe(0);
    expect(await exitCode(`127.0.0.1:${port}`, "no.such.Service")).toBe(1);
    health.setAll(ServingStatus.NOT_SERVING);
    expect(await exitCode(`127.0.0.1:${port}`)).toBe(1);
    expect(await exitCode("127.0.0.1:1", "", "500")).toBe(1);
    expect(await exitCode()).toBe(2);
  }, 60_000);
});
