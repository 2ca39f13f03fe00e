/**
 * A small renderer for the subset of Helm's Go-template language that infra/helm/minicpmv uses,
 * so the chart can be rendered and validated offline (no helm binary here).
 *
 * Supported: text with `{{- ... -}}` trimming, comments, `if`/`else`/`end`, `with`, `range`
 * (with `$k, $v :=` or `$v :=`), `define` + `include`, pipelines, `.Values...`, `.Release...`,
 * `.Chart...`, `$`, `$var`, string/number/bool literals, parenthesised pipelines, and the functions
 * in `FUNCS`. Anything else throws, and so does a missing key (stricter than Helm, which renders
 * a missing value as empty): a typo in a template fails the test instead of rendering blank.
 */
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";

type Value = unknown;
type Node =
  | { kind: "text"; text: string }
  | { kind: "action"; pipe: string }
  | { kind: "if"; cond: string; yes: Node[]; no: Node[] }
  | { kind: "with"; pipe: string; body: Node[]; else: Node[] }
  | { kind: "range"; vars: string[]; pipe: string; body: Node[] };

interface Scope {
  dot: Value;
  root: Value;
  vars: Map<string, Value>;
}

/** A chart read from disk: templates by file name and the default values. */
export interface ChartFiles {
  chart: { name: string; version: string; appVersion: string };
  values: Record<string, unknown>;
  templates: Record<string, string>;
}

/** One rendered Kubernetes object with the template file it came from. */
export interface RenderedObject {
  source: string;
  object: Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string } };
}

// ---- tokenizing -----------------------------------------------------------------------------

type Token = { kind: "text"; text: string } | { kind: "action"; body: string };

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let trimNext = false;
  while (i < src.length) {
    const open = src.indexOf("{{", i);
    let text = open === -1 ? src.slice(i) : src.slice(i, open);
    if (trimNext) text = text.replace(/^\s+/, "");
    if (open === -1) {
      if (text) out.push({ kind: "text", text });
      break;
    }
    const close = src.indexOf("}}", open);
    if (close === -1) throw new Error(`unclosed action at offset ${open}`);
    let body = src.slice(open + 2, close);
    if (body.startsWith("- ")) {
      text = text.replace(/\s+$/, "");
      body = body.slice(2);
    }
    trimNext = body.endsWith(" -");
    if (trimNext) body = body.slice(0, -2);
    if (text) out.push({ kind: "text", text });
    body = body.trim();
    if (!(body.startsWith("/*") && body.endsWith("*/"))) out.push({ kind: "action", body });
    i = close + 2;
  }
  return out;
}

// ---- parsing --------------------------------------------------------------------------------

function parseNodes(tokens: Token[], defines: Map<string, Node[]>): Node[] {
  let pos = 0;
  const block = (stopAt: string[]): { nodes: Node[]; stop: string } => {
    const nodes: Node[] = [];
    while (pos < tokens.length) {
      const t = tokens[pos++] as Token;
      if (t.kind === "text") {
        nodes.push({ kind: "text", text: t.text });
        continue;
      }
      const [word = "", ...rest] = t.body.split(/\s+/);
      const arg = rest.join(" ");
      if (stopAt.includes(word) && (word !== "else" || arg === "")) return { nodes, stop: word };
      if (word === "if") {
        const yes = block(["else", "end"]);
        const no = yes.stop === "else" ? block(["end"]).nodes : [];
        nodes.push({ kind: "if", cond: arg, yes: yes.nodes, no });
      } else if (word === "with") {
        const body = block(["else", "end"]);
        const other = body.stop === "else" ? block(["end"]).nodes : [];
        nodes.push({ kind: "with", pipe: arg, body: body.nodes, else: other });
      } else if (word === "range") {
        const m = /^(\$\w+)(?:\s*,\s*(\$\w+))?\s*:=\s*(.+)$/.exec(arg);
        const vars = m ? [m[1], m[2]].filter((v): v is string => v !== undefined) : [];
        const body = block(["end"]);
        nodes.push({ kind: "range", vars, pipe: m ? (m[3] as string) : arg, body: body.nodes });
      } else if (word === "define") {
        const name = JSON.parse(arg) as string;
        defines.set(name, block(["end"]).nodes);
      } else if (["else", "end", "block", "template", "break", "continue"].includes(word)) {
        throw new Error(`unsupported or misplaced "{{ ${t.body} }}"`);
      } else {
        nodes.push({ kind: "action", pipe: t.body });
      }
    }
    if (stopAt.length > 0) throw new Error(`missing {{ end }} (expected one of ${stopAt.join(", ")})`);
    return { nodes, stop: "" };
  };
  return block([]).nodes;
}

// ---- expressions ----------------------------------------------------------------------------

/** Splits a pipeline or command into top-level parts (strings and parentheses kept whole). */
function splitTop(src: string, sep: "|" | " "): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  let quote = "";
  for (let i = 0; i < src.length; i++) {
    const c = src[i] as string;
    if (quote) {
      cur += c;
      if (c === "\\" && quote === '"') cur += src[++i] ?? "";
      else if (c === quote) quote = "";
      continue;
    }
    if (c === '"' || c === "`") quote = c;
    else if (c === "(") depth++;
    else if (c === ")") depth--;
    const isSep = sep === "|" ? c === "|" : /\s/.test(c);
    if (isSep && depth === 0) {
      if (cur.trim()) parts.push(cur.trim());
      cur = "";
    } else cur += c;
  }
  if (quote || depth !== 0) throw new Error(`unbalanced quotes or parentheses in "${src}"`);
  if (cur.trim()) parts.push(cur.trim());
  return parts;
}

function isTrue(v: Value): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "object") return Object.keys(v).length > 0;
  return true;
}

function lookup(base: Value, path: string[], expr: string): Value {
  let v = base;
  for (const key of path) {
    if (v === null || typeof v !== "object" || !Object.hasOwn(v, key)) {
      throw new Error(`missing key "${key}" in "${expr}"`);
    }
    v = (v as Record<string, Value>)[key];
  }
  return v;
}

function toText(v: Value): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  throw new Error(`cannot print a ${Array.isArray(v) ? "list" : "map"} directly; use toYaml`);
}

function indentLines(n: number, s: string): string {
  const pad = " ".repeat(n);
  return s
    .split("\n")
    .map((line) => pad + line)
    .join("\n");
}

class Renderer {
  constructor(private readonly defines: Map<string, Node[]>) {}

  private readonly funcs: Record<string, (...args: Value[]) => Value> = {
    quote: (...a) => a.map((v) => JSON.stringify(toText(v))).join(" "),
    toYaml: (v) => (v === null || v === undefined ? "null" : stringifyYaml(v).replace(/\n$/, "")),
    nindent: (n, s) => `\n${indentLines(n as number, toText(s))}`,
    indent: (n, s) => indentLines(n as number, toText(s)),
    default: (def, v) => (isTrue(v) ? v : def),
    not: (v) => !isTrue(v),
    or: (...a) => a.find(isTrue) ?? a[a.length - 1],
    and: (...a) => a.find((v) => !isTrue(v)) ?? a[a.length - 1],
    eq: (a, b) => a === b,
    dict: (...a) => {
      if (a.length % 2 !== 0) throw new Error("dict needs key/value pairs");
      const out: Record<string, Value> = {};
      for (let i = 0; i < a.length; i += 2) out[toText(a[i])] = a[i + 1];
      return out;
    },
    printf: (fmt, ...args) => {
      let k = 0;
      return toText(fmt).replace(/%([svd%])/g, (_m, verb: string) => (verb === "%" ? "%" : toText(args[k++])));
    },
    include: (name, data) => {
      const body = this.defines.get(toText(name));
      if (!body) throw new Error(`include of undefined template "${toText(name)}"`);
      return this.nodes(body, { dot: data, root: data, vars: new Map([["$", data]]) });
    },
  };

  private operand(src: string, scope: Scope, piped: Value[]): Value {
    if (src.startsWith("(") && src.endsWith(")")) return this.pipeline(src.slice(1, -1), scope);
    if (src.startsWith('"')) return JSON.parse(src);
    if (src.startsWith("`")) return src.slice(1, -1);
    if (/^-?\d+(\.\d+)?$/.test(src)) return Number(src);
    if (src === "true" || src === "false") return src === "true";
    if (src === "nil") return null;
    if (src === ".") return scope.dot;
    if (src.startsWith(".")) return lookup(scope.dot, src.slice(1).split("."), src);
    if (src.startsWith("$")) {
      const [name = "", ...path] = src.split(".");
      if (!scope.vars.has(name)) throw new Error(`undefined variable ${name}`);
      return lookup(scope.vars.get(name), path, src);
    }
    const fn = this.funcs[src];
    if (!fn) throw new Error(`unsupported function "${src}"`);
    return fn(...piped);
  }

  pipeline(src: string, scope: Scope): Value {
    let value: Value;
    let first = true;
    for (const cmd of splitTop(src, "|")) {
      const words = splitTop(cmd, " ");
      const head = words[0] as string;
      const isFunc = /^[a-zA-Z]\w*$/.test(head) && !["true", "false", "nil"].includes(head);
      if (!isFunc) {
        if (words.length !== 1 || !first) throw new Error(`cannot call non-function "${cmd}"`);
        value = this.operand(head, scope, []);
      } else {
        const args = words.slice(1).map((w) => this.operand(w, scope, []));
        if (!first) args.push(value);
        value = this.operand(head, scope, args);
      }
      first = false;
    }
    return value;
  }

  nodes(nodes: Node[], scope: Scope): string {
    let out = "";
    for (const n of nodes) {
      if (n.kind === "text") out += n.text;
      else if (n.kind === "action") out += toText(this.pipeline(n.pipe, scope));
      else if (n.kind === "if") out += this.nodes(isTrue(this.pipeline(n.cond, scope)) ? n.yes : n.no, scope);
      else if (n.kind === "with") {
        const v = this.pipeline(n.pipe, scope);
        out += isTrue(v) ? this.nodes(n.body, { ...scope, dot: v }) : this.nodes(n.else, scope);
      } else {
        const v = this.pipeline(n.pipe, scope);
        // NOTE: Go templates range over maps in sorted key order.
        const entries: [Value, Value][] = Array.isArray(v)
          ? v.map((x, i) => [i, x])
          : v && typeof v === "object"
            ? Object.keys(v)
                .sort()
                .map((k) => [k, (v as Record<string, Value>)[k]])
            : [];
        for (const [k, x] of entries) {
          const vars = new Map(scope.vars);
          if (n.vars.length === 2) {
            vars.set(n.vars[0] as string, k);
            vars.set(n.vars[1] as string, x);
          } else if (n.vars.length === 1) vars.set(n.vars[0] as string, x);
          out += this.nodes(n.body, { ...scope, dot: x, vars });
        }
      }
    }
    return out;
  }
}

/** Deep-merges `override` onto `base` the way Helm merges values files (maps merge, the rest replaces). */
export function mergeValues(base: Record<string, unknown>, override: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(override)) {
    const b = out[k];
    const bothMaps = v && typeof v === "object" && !Array.isArray(v) && b && typeof b === "object" && !Array.isArray(b);
    out[k] = bothMaps ? mergeValues(b as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

/** Renders every template of `chart` with `values` merged over the defaults; returns the objects. */
export function renderChart(
  chart: ChartFiles,
  release: { name: string; namespace: string },
  overrides: Record<string, unknown> = {},
): RenderedObject[] {
  const defines = new Map<string, Node[]>();
  const parsed = Object.entries(chart.templates)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([file, src]) => [file, parseNodes(tokenize(src), defines)] as const);
  const root = {
    Values: mergeValues(chart.values, overrides),
    Release: { Name: release.name, Namespace: release.namespace, Service: "Helm" },
    Chart: { Name: chart.chart.name, Version: chart.chart.version, AppVersion: chart.chart.appVersion },
  };
  const renderer = new Renderer(defines);
  const objects: RenderedObject[] = [];
  for (const [file, nodes] of parsed) {
    if (file.startsWith("_")) continue;
    let text: string;
    try {
      text = renderer.nodes(nodes, { dot: root, root, vars: new Map([["$", root]]) });
    } catch (e) {
      throw new Error(`${file}: ${(e as Error).message}`);
    }
    for (const doc of text.split(/^---[ \t]*$/m)) {
      let object: unknown;
      try {
        object = parseYaml(doc);
      } catch (e) {
        throw new Error(`${file}: rendered YAML does not parse: ${(e as Error).message}\n${doc}`);
      }
      if (object === null || object === undefined) continue;
      objects.push({ source: file, object: object as RenderedObject["object"] });
    }
  }
  return objects;
}
