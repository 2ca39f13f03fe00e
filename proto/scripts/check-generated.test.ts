import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const protoDir = join(import.meta.dirname, "..");
const script = join(import.meta.dirname, "check-generated.ts");
const tmp = mkdtempSync(join(tmpdir(), "proto-check-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function check(dir: string): { code: number; out: string } {
  try {
    const out = execFileSync(process.execPath, ["--import", "tsx", script], {
      env: {
        ...process.env,
        PROTO_DIR: dir,
        PATH: `${join(protoDir, "../node_modules/.bin")}:${process.env.PATH}`,
      },
      encoding: "utf8",
      stdio: "pipe",
    });
    return { code: 0, out };
  } catch (e) {
    const err = e as { status: number; stdout: string; stderr: string };
    return { code: err.status, out: `${err.stdout}${err.stderr}` };
  }
}

function copy(name: string): string {
  const dir = join(tmp, name);
  cpSync(protoDir, dir, { recursive: true, filter: (src) => !src.includes("node_modules") });
  return dir;
}

describe("stale generated-code check", () => {
  it("passes on the committed code", () => {
    const r = check(copy("clean"));
    expect(r.out).toContain("proto/gen is in sync");
    expect(r.code).toBe(0);
  });

  it("fails when a generated file was edited", () => {
    const dir = copy("edited");
    writeFileSync(join(dir, "gen/minicpmv/v1/common_pb.ts"), "// edited by hand\n", { flag: "a" });
    const r = check(dir);
    expect(r.code).toBe(1);
    expect(r.out).toContain("proto/gen/minicpmv/v1/common_pb.ts differs from what buf generates");
  });

  it("fails when a .proto changed but gen/ was not regenerated", () => {
    const dir = copy("stale");
    const proto = join(dir, "minicpmv/v1/common.proto");
    writeFileSync(proto, "\n// One more message.\nmessage Extra {\n  // A field.\n  string x = 1;\n}\n", { flag: "a" });
    const r = check(dir);
    expect(r.code).toBe(1);
    expect(r.out).toContain("common_pb.ts differs");
  });
});
