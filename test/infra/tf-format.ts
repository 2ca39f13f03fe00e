/**
 * Checks that a .tf file is laid out the way `terraform fmt` lays it out, for the subset of HCL
 * this repository writes (terraform itself cannot be installed here). What is checked:
 *
 * - LF line endings, no tabs, no trailing whitespace, exactly one newline at the end;
 * - indentation: two spaces per open bracket level, a line that opens brackets indents the
 *   following lines one level (however many it opens: `toset([`), a line that starts with a
 *   closer sits at the level of the line that opened it;
 * - `=` alignment: consecutive single-line attributes at one level ("key = value") put their `=`
 *   one column after the longest key, and exactly one space follows the `=`;
 * - block headers `type "label" {` with one space before the brace.
 *
 * Not checked (so not written here): heredocs, multi-line expressions that open and close
 * brackets on the same line in unbalanced ways, and the question of whether a multi-line
 * attribute (`x = {`) joins the alignment group of the attributes right above it: the checker
 * rejects that layout and asks for a blank line between, which `terraform fmt` leaves alone.
 */

/** One formatting problem: 1-based line and a message. */
export interface FormatIssue {
  line: number;
  message: string;
}

/** Removes string contents (keeping the quotes) and comments, so brackets can be counted. */
function codeOnly(line: string, state: { inString: boolean; interp: number }): string {
  let out = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (state.inString && state.interp === 0) {
      if (c === "\\") i++;
      else if (c === '"') {
        state.inString = false;
        out += c;
      } else if ((c === "$" || c === "%") && line[i + 1] === "{" && line[i - 1] !== c) {
        state.interp = 1;
        i++;
      }
      continue;
    }
    if (state.interp > 0) {
      // Inside ${...}: nested strings are skipped, braces counted until the interpolation closes.
      if (c === '"') {
        const end = line.indexOf('"', i + 1);
        i = end === -1 ? line.length : end;
      } else if (c === "{") state.interp++;
      else if (c === "}") state.interp--;
      continue;
    }
    if (c === "#" || (c === "/" && line[i + 1] === "/")) break;
    if (c === '"') state.inString = true;
    out += c;
  }
  if (state.inString && state.interp === 0) throw new Error("multi-line string literal");
  return out;
}

const ATTR = /^(\s*)([A-Za-z_][\w-]*|"[^"]+")(\s*)=(?!=)(\s*)(.*)$/;

/** Returns every formatting problem of `src`; an empty list means the file is canonical. */
export function checkTerraformFormat(src: string): FormatIssue[] {
  const issues: FormatIssue[] = [];
  if (src.includes("\r")) issues.push({ line: 1, message: "CR line endings" });
  if (!src.endsWith("\n") || src.endsWith("\n\n")) issues.push({ line: 1, message: "must end with one newline" });
  const lines = src.replace(/\n$/, "").split("\n");
  const state = { inString: false, interp: 0 };
  const stack: number[] = []; // open-bracket counts of the lines that raised the level
  interface Attr {
    line: number;
    depth: number;
    key: string;
    eqCol: number;
    multi: boolean;
  }
  let chain: Attr[] = [];
  const flush = () => {
    const singles = chain.filter((a) => !a.multi);
    if (chain.some((a) => a.multi) && singles.length > 0) {
      const multi = chain.find((a) => a.multi) as Attr;
      issues.push({
        line: multi.line,
        message: "separate a multi-line attribute from single-line ones by a blank line",
      });
    } else if (singles.length > 0) {
      const width = Math.max(...singles.map((a) => a.key.length));
      for (const a of singles) {
        const want = a.depth * 2 + width + 1;
        if (a.eqCol !== want)
          issues.push({ line: a.line, message: `"=" of ${a.key} at column ${a.eqCol + 1}, expected ${want + 1}` });
      }
    }
    chain = [];
  };

  lines.forEach((raw, idx) => {
    const n = idx + 1;
    if (raw.includes("\t")) issues.push({ line: n, message: "tab character" });
    if (/\s+$/.test(raw)) issues.push({ line: n, message: "trailing whitespace" });
    const code = codeOnly(raw, state).trim();
    const opens = (code.match(/[[{(]/g) ?? []).length;
    const closes = (code.match(/[\]})]/g) ?? []).length;
    const leadingClosers = (/^[\]})]+/.exec(code)?.[0].length ?? 0) > 0;
    let depth = stack.length;
    if (leadingClosers) depth -= 1;
    const trimmed = raw.trim();
    if (trimmed !== "" && raw.length - raw.trimStart().length !== depth * 2) {
      issues.push({ line: n, message: `indentation ${raw.length - raw.trimStart().length}, expected ${depth * 2}` });
    }
    // level bookkeeping
    let net = opens - closes;
    if (net > 0) stack.push(net);
    else if (net < 0) {
      while (net < 0 && stack.length > 0) {
        const top = (stack.pop() as number) + net;
        if (top > 0) {
          stack.push(top);
          net = 0;
        } else net = top;
      }
    }
    // alignment chains
    const m = ATTR.exec(raw);
    const isComment = trimmed.startsWith("#") || trimmed.startsWith("//");
    if (trimmed === "" || isComment || !m || leadingClosers) {
      flush();
      if (!m && /^[\w-]+(\s+("[^"]*"|[\w-]+))*\s*\{$/.test(trimmed) && !/\S \{$/.test(trimmed)) {
        issues.push({ line: n, message: "block header needs one space before {" });
      }
      return;
    }
    const [, indent = "", key = "", , after = "", value = ""] = m;
    if (after !== " " && value !== "") issues.push({ line: n, message: `exactly one space must follow "=" of ${key}` });
    chain.push({
      line: n,
      depth: indent.length / 2,
      key,
      eqCol: raw.indexOf("=", indent.length + key.length),
      multi: opens > closes,
    });
    if (opens > closes) flush();
  });
  flush();
  if (stack.length !== 0) issues.push({ line: lines.length, message: "unbalanced brackets at end of file" });
  return issues;
}
