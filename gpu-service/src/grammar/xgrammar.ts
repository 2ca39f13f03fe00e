/**
 * Loads @mlc-ai/web-xgrammar (xgrammar, the grammar engine of vLLM and SGLang, compiled to WebAssembly) in
 * Node, and reads the reason of a failed compile.
 *
 * NOTE: the package declares `"type": "module"` but ships a UMD bundle, which neither `import` nor `require`
 * loads as is: it is evaluated here as a CommonJS module body with the `require` and `__filename` its
 * Emscripten loader reads (`require("url").pathToFileURL(__filename)`); the WebAssembly binary is embedded.
 * xgrammar reports bad input (a schema it cannot convert, an EBNF syntax error) by aborting the call: the
 * thrown error says only "Aborted()", the reason goes to the module's stderr, so the bundle gets its own
 * `console` whose error lines are kept for `lastError()`.
 */
import { readFileSync } from "node:fs";
import * as nodeModule from "node:module";
import { createRequire } from "node:module";

/** The module's types. */
export type XGrammar = typeof import("@mlc-ai/web-xgrammar");

let loaded: XGrammar | undefined;
let stderrLines: string[] = [];

const moduleConsole = {
  ...console,
  log: () => {},
  info: () => {},
  warn: (...args: unknown[]) => stderrLines.push(args.map(String).join(" ")),
  error: (...args: unknown[]) => {
    stderrLines.push(args.map(String).join(" "));
    if (stderrLines.length > 64) stderrLines = stderrLines.slice(-32);
  },
};

/** The xgrammar module (evaluated once per thread). */
export function xgrammar(): XGrammar {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const file = require.resolve("@mlc-ai/web-xgrammar");
  // NOTE: the loader's one dynamic import (`await import('module')`) is handed in: a function body has no
  // module context to resolve it from (vitest's VM refuses it).
  const source = readFileSync(file, "utf8").replace("await import('module')", "__nodeModule");
  const module = { exports: {} as Record<string, unknown> };
  const body = new Function(
    "exports",
    "module",
    "require",
    "__filename",
    "__dirname",
    "console",
    "__nodeModule",
    source,
  );
  const dir = file.replace(/[/\\][^/\\]*$/, "");
  body.call(globalThis, module.exports, module, require, file, dir, moduleConsole, nodeModule);
  loaded = module.exports as unknown as XGrammar;
  return loaded;
}

/** Forgets what xgrammar wrote so far (call before an operation whose failure `lastError` should explain). */
export function clearErrors(): void {
  stderrLines = [];
}

/**
 * The reason xgrammar gave for its last failure, without the C++ file and line: "[FATAL] x.cc:961: Check
 * failed: (...) is false: Cannot find field nope in {...}" -> "Cannot find field nope in {...}".
 */
export function lastError(): string | undefined {
  const fatal = stderrLines.find((l) => l.includes("[FATAL]"));
  if (!fatal) return undefined;
  let msg = fatal.replace(/^.*?\[FATAL\]\s*\S+:\d+:\s*/, "");
  msg = msg.replace(/^Check failed: \(.*?\) is false:\s*/, "");
  return msg.split("\n")[0]?.trim().slice(0, 500);
}
