/**
 * Fails when proto/gen/ is not what `buf generate` makes from the .proto files (stale or edited
 * generated code), and when `buf lint` finds problems. Generates into a temporary folder and compares.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

// PROTO_DIR lets the test point the check at a tampered copy.
const root = process.env.PROTO_DIR ?? join(import.meta.dirname, "..");
const bufBin = [join(root, "node_modules/.bin/buf"), join(import.meta.dirname, "../../node_modules/.bin/buf")].find(
  (p) => {
    try {
      statSync(p);
      return true;
    } catch {
      return false;
    }
  },
);
if (!bufBin) throw new Error("buf not found: run npm install");

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else out.push(p);
  }
  return out.sort();
}

execFileSync(bufBin, ["lint"], { cwd: root, stdio: "inherit" });
const tmp = mkdtempSync(join(tmpdir(), "proto-gen-"));
try {
  const template = readFileSync(join(root, "buf.gen.yaml"), "utf8").replace(/out: gen/g, `out: ${tmp}/gen`);
  const tpl = join(tmp, "buf.gen.yaml");
  writeFileSync(tpl, template);
  execFileSync(bufBin, ["generate", "--template", tpl], { cwd: root, stdio: "inherit" });
  const want = files(join(tmp, "gen")).map((f) => relative(join(tmp, "gen"), f));
  const have = files(join(root, "gen")).map((f) => relative(join(root, "gen"), f));
  const problems: string[] = [];
  for (const f of new Set([...want, ...have])) {
    if (!want.includes(f)) problems.push(`proto/gen/${f} is not generated from any .proto file`);
    else if (!have.includes(f)) problems.push(`proto/gen/${f} is missing`);
    else if (readFileSync(join(tmp, "gen", f), "utf8") !== readFileSync(join(root, "gen", f), "utf8"))
      problems.push(`proto/gen/${f} differs from what buf generates`);
  }
  if (problems.length > 0) {
    console.error(`${problems.join("\n")}\nproto/gen is stale: run \`npm run proto:gen\` and commit the result.`);
    process.exit(1);
  }
  console.log(`proto/gen is in sync (${have.length} files)`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
