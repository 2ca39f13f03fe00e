/**
 * Offline checks of infra/terraform (terraform itself cannot be downloaded here): every .tf parses
 * (@cdktf/hcl2json, HashiCorp's HCL parser compiled to wasm), the layout is canonical (see
 * tf-format.ts for what that covers), every variable and output is documented and typed, module
 * calls pass exactly the declared inputs, and every var./local./module. reference resolves.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "@cdktf/hcl2json";
import { beforeAll, describe, expect, it } from "vitest";
import { checkTerraformFormat } from "./tf-format";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../infra/terraform");
const META_ARGS = new Set(["source", "version", "providers", "depends_on", "count", "for_each"]);

type Hcl = Record<string, Record<string, Record<string, unknown>[]>>;
interface TfDir {
  path: string;
  files: Record<string, string>;
  parsed: Hcl[];
}

function listDirs(dir: string): string[] {
  const out: string[] = [];
  const entries = readdirSync(dir);
  if (entries.some((f) => f.endsWith(".tf"))) out.push(dir);
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory() && !e.startsWith(".")) out.push(...listDirs(p));
  }
  return out;
}

const dirs = new Map<string, TfDir>();

function blocks(d: TfDir, kind: string): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const p of d.parsed) {
    for (const [name, list] of Object.entries(p[kind] ?? {})) out.set(name, list[0] as Record<string, unknown>);
  }
  return out;
}

function locals(d: TfDir): Set<string> {
  const out = new Set<string>();
  for (const p of d.parsed) {
    for (const l of (p.locals as unknown as Record<string, unknown>[] | undefined) ?? []) {
      for (const k of Object.keys(l)) out.add(k);
    }
  }
  return out;
}

/** Every `prefix.name` reference in the code of a directory (comments stripped). */
function references(d: TfDir, prefix: string): Map<string, string> {
  const out = new Map<string, string>(); // reference -> file
  const re = new RegExp(`(?<![\\w.])${prefix}\\.([A-Za-z_][\\w-]*)(?:\\.([A-Za-z_][\\w-]*))?`, "g");
  for (const [file, src] of Object.entries(d.files)) {
    const code = src.replace(/^\s*#.*$/gm, "");
    for (const m of code.matchAll(re)) out.set(prefix === "module" ? `${m[1]}.${m[2] ?? ""}` : (m[1] as string), file);
  }
  return out;
}

beforeAll(async () => {
  for (const path of listDirs(ROOT)) {
    const files: Record<string, string> = {};
    for (const f of readdirSync(path).filter((x) => x.endsWith(".tf"))) files[f] = readFileSync(join(path, f), "utf8");
    const parsed: Hcl[] = [];
    for (const [f, src] of Object.entries(files)) parsed.push((await parse(join(path, f), src)) as Hcl);
    dirs.set(relative(ROOT, path), { path, files, parsed });
  }
}, 60_000);

describe("infra/terraform", () => {
  it("has the five modules and the example environment", () => {
    expect([...dirs.keys()].sort()).toEqual([
      "envs/example",
      "modules/edge-dns-tls",
      "modules/gke",
      "modules/network",
      "modules/serving",
      "modules/weights-bucket",
    ]);
  });

  it("rejects a broken file (the parser is really parsing)", async () => {
    await expect(parse("broken.tf", 'variable "x" {\n  type = \n}\n')).rejects.toThrow(/Invalid expression/);
  });

  it("is formatted canonically", () => {
    const problems: string[] = [];
    for (const [name, d] of dirs) {
      for (const [f, src] of Object.entries(d.files)) {
        for (const i of checkTerraformFormat(src)) problems.push(`${name}/${f}:${i.line}: ${i.message}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it("format checker catches misalignment, bad indentation and trailing space", () => {
    const bad = 'resource "a" "b" {\n  name = "x"\n  location = "y"\n   tags = {}  \n}\n';
    expect(
      checkTerraformFormat(bad)
        .map((i) => i.line)
        .sort(),
    ).toEqual([2, 4, 4, 4]);
    const good = 'resource "a" "b" {\n  name     = "x"\n  location = "y"\n\n  labels = {\n    k = "v"\n  }\n}\n';
    expect(checkTerraformFormat(good)).toEqual([]);
  });

  it("gives every variable a type and a description, and every output a description", () => {
    const missing: string[] = [];
    for (const [name, d] of dirs) {
      for (const [v, body] of blocks(d, "variable")) {
        if (typeof body.type !== "string" || !body.type.startsWith("${")) missing.push(`${name}: variable ${v} type`);
        if (typeof body.description !== "string" || body.description.length < 10) {
          missing.push(`${name}: variable ${v} description`);
        }
      }
      for (const [o, body] of blocks(d, "output")) {
        if (typeof body.description !== "string" || body.description.length < 10) missing.push(`${name}: output ${o}`);
      }
    }
    expect(missing).toEqual([]);
    expect(blocks(dirs.get("modules/gke") as TfDir, "variable").size).toBeGreaterThan(10);
  });

  it("wires module calls to declared inputs, all required inputs, and existing outputs", () => {
    const problems: string[] = [];
    let calls = 0;
    for (const [name, d] of dirs) {
      const declaredCalls = blocks(d, "module");
      for (const [call, body] of declaredCalls) {
        calls++;
        const target = relative(ROOT, resolve(d.path, body.source as string));
        const mod = dirs.get(target);
        if (!mod) {
          problems.push(`${name}: module ${call} source ${String(body.source)} not found`);
          continue;
        }
        const vars = blocks(mod, "variable");
        for (const arg of Object.keys(body)) {
          if (!META_ARGS.has(arg) && !vars.has(arg)) problems.push(`${name}: module ${call} passes undeclared ${arg}`);
        }
        for (const [v, decl] of vars) {
          if (!("default" in decl) && !(v in body)) problems.push(`${name}: module ${call} misses required ${v}`);
        }
      }
      for (const [ref, file] of references(d, "module")) {
        const [call = "", output = ""] = ref.split(".");
        if (output === "") continue; // a whole-module reference (depends_on)
        const body = declaredCalls.get(call);
        if (!body) {
          problems.push(`${name}/${file}: module.${call} is not declared`);
          continue;
        }
        const mod = dirs.get(relative(ROOT, resolve(d.path, body.source as string)));
        if (mod && !blocks(mod, "output").has(output)) problems.push(`${name}/${file}: module.${ref} is not an output`);
      }
    }
    expect(problems).toEqual([]);
    expect(calls).toBe(5);
  });

  it("resolves every var. and local. reference inside its own directory, and uses every variable", () => {
    const problems: string[] = [];
    for (const [name, d] of dirs) {
      const vars = blocks(d, "variable");
      const used = references(d, "var");
      for (const [v, file] of used) if (!vars.has(v)) problems.push(`${name}/${file}: var.${v} undeclared`);
      for (const v of vars.keys()) if (!used.has(v)) problems.push(`${name}: variable ${v} is never used`);
      const ls = locals(d);
      for (const [l, file] of references(d, "local"))
        if (!ls.has(l)) problems.push(`${name}/${file}: local.${l} undeclared`);
    }
    expect(problems).toEqual([]);
  });

  it("keeps remote state configurable and provider resources inside modules", () => {
    const env = dirs.get("envs/example") as TfDir;
    expect(env.files["backend.tf"]).toMatch(/backend "gcs" \{\}/);
    const envResources = env.parsed.flatMap((p) => Object.keys(p.resource ?? {}));
    expect(envResources).toEqual([]);
    // Each module pins the providers it uses.
    for (const [name, d] of dirs) {
      const tf = d.parsed.flatMap((p) => (p.terraform as unknown as Record<string, unknown>[] | undefined) ?? []);
      expect(
        tf.some((t) => t.required_providers !== undefined),
        name,
      ).toBe(true);
    }
  });

  it("supplies every interpolation of the serving values template", () => {
    const serving = dirs.get("modules/serving") as TfDir;
    const tpl = readFileSync(join(serving.path, "values.yaml.tftpl"), "utf8");
    const used = new Set([...tpl.matchAll(/(?<!\$)\$\{([^}]+)\}/g)].map((m) => m[1] as string));
    expect(tpl).not.toMatch(/%\{/); // no template directives: the test renderer handles plain ${name} only
    const local = serving.parsed.flatMap((p) => (p.locals as unknown as Record<string, unknown>[] | undefined) ?? []);
    const chartValues = local.find((l) => "chart_values" in l)?.chart_values as Record<string, unknown>;
    const supplied = new Set(Object.keys(chartValues));
    expect([...used].sort()).toEqual([...supplied].sort());
  });
});
