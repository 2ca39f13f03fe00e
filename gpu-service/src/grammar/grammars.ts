/**
 * Compiles structured-output specs into xgrammar grammars for one vocabulary, once per spec (an LRU cache),
 * and hands out per-sequence matchers.
 *
 *   StructuredSpec ─ key ─> cache hit? ─ yes ─> CompiledGrammar ─> matcher() per sequence (bitmask, accept)
 *                              └ no ─> TokenizerInfo (once, ~1.4 s at 151,666 tokens) ─> compile (ms..s)
 *
 * Formats: a JSON Schema compiles with xgrammar's JSON Schema converter (strict: no properties beyond the
 * schema's, one line, `", "` and `": "` separators, like Python's json.dumps); json_object is the schema
 * `{"type": "object"}`; regex, choice and tool calls are xgrammar structural tags; grammar is EBNF/GBNF.
 */
import type { CompiledGrammar, GrammarCompiler, GrammarMatcher } from "@mlc-ai/web-xgrammar";
import { type Constraint, RequestError, type StructuredSpec, type TokenMatcher } from "../engine/types";
import { clearErrors, lastError, xgrammar } from "./xgrammar";

/** The vocabulary as xgrammar needs it. */
export interface GrammarVocab {
  /** Logits per step (the model's vocabulary size). */
  readonly vocabSize: number;
  tokenBytes(id: number): Uint8Array;
  isSpecial?(id: number): boolean;
  /** The default stop tokens. */
  readonly terminators: readonly number[];
}

/** Compile counters. */
export interface GrammarStats {
  compiles: number;
  cacheHits: number;
  compileMs: number;
  liveMatchers: number;
}

// GPT-2's byte -> printable character table (the byte-level BPE alphabet).
function byteLevelAlphabet(): string[] {
  const out: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return out;
}

/** xgrammar for one model: compiled grammars by spec, and matchers. */
export class Grammars {
  private compiler: Promise<GrammarCompiler> | undefined;
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();
  private readonly stats_: GrammarStats = { compiles: 0, cacheHits: 0, compileMs: 0, liveMatchers: 0 };

  constructor(
    private readonly vocab: GrammarVocab,
    private readonly maxCached = 256,
  ) {}

  /** Counters (live matchers: sequences holding grammar state). */
  stats(): GrammarStats {
    return { ...this.stats_ };
  }

  /** The xgrammar compiler over this vocabulary (built on first use). */
  private compilerFor(): Promise<GrammarCompiler> {
    this.compiler ??= (async () => {
      const xg = xgrammar();
      const alphabet = byteLevelAlphabet();
      const v = this.vocab;
      const encoded: string[] = new Array(v.vocabSize);
      for (let id = 0; id < v.vocabSize; id++) {
        // NOTE: special tokens become "", which xgrammar never allows inside a grammar (only as a stop
        // token), so no <image> or <|im_start|> can appear in constrained text.
        if (v.isSpecial?.(id)) {
          encoded[id] = "";
          continue;
        }
        let s = "";
        for (const b of v.tokenBytes(id)) s += alphabet[b];
        encoded[id] = s;
      }
      const info = await xg.TokenizerInfo.createTokenizerInfo(encoded, "byte_level", false, v.vocabSize, [
        ...v.terminators,
      ]);
      return xg.GrammarCompiler.createGrammarCompiler(info);
    })();
    return this.compiler;
  }

  /** Builds the tokenizer tables now (they take a second or more at full vocabulary size). */
  async warmUp(): Promise<void> {
    await this.compilerFor();
  }

  /**
   * Compiles `spec` (or takes it from the cache). A spec xgrammar cannot compile is a `RequestError`
   * (invalid_argument) naming `params.structured.<kind>` and xgrammar's reason.
   */
  async compile(spec: StructuredSpec): Promise<Constraint> {
    const key = JSON.stringify(spec);
    let p = this.cache.get(key);
    if (p) {
      this.stats_.cacheHits++;
      this.cache.delete(key); // LRU: move to the back
      this.cache.set(key, p);
    } else {
      p = this.compileNew(spec);
      this.cache.set(key, p);
      p.catch(() => this.cache.delete(key));
      while (this.cache.size > this.maxCached) {
        const oldest = this.cache.keys().next().value as string;
        const evicted = this.cache.get(oldest);
        this.cache.delete(oldest);
        // NOTE: matchers keep their own reference to the compiled grammar's data (xgrammar shares it).
        void evicted?.then((g) => g.dispose()).catch(() => {});
      }
    }
    const compiled = await p;
    return { matcher: (stopIds) => this.matcher(compiled, stopIds) };
  }

  private async compileNew(spec: StructuredSpec): Promise<CompiledGrammar> {
    const compiler = await this.compilerFor();
    const t0 = performance.now();
    clearErrors();
    try {
      const g = await compileWith(compiler, spec);
      this.stats_.compiles++;
      this.stats_.compileMs += performance.now() - t0;
      return g;
    } catch (err) {
      const reason = lastError() ?? (err instanceof Error ? err.message : String(err));
      throw new RequestError("invalid_argument", `params.structured.${spec.kind}: cannot compile: ${reason}`);
    }
  }

  private async matcher(compiled: CompiledGrammar, stopIds: readonly number[]): Promise<TokenMatcher> {
    const xg = xgrammar();
    const m: GrammarMatcher = await xg.GrammarMatcher.createGrammarMatcher(compiled, [...stopIds]);
    this.stats_.liveMatchers++;
    let live = true;
    return {
      nextMask: () => m.getNextTokenBitmask(),
      accept: (id) => m.acceptToken(id),
      dispose: () => {
        if (!live) return;
        live = false;
        this.stats_.liveMatchers--;
        m.dispose();
      },
    };
  }
}

/** The structural tag of one regex / choice (xgrammar's format). */
function tagOf(format: Record<string, unknown>): string {
  return JSON.stringify({ type: "structural_tag", format });
}

/**
 * A JSON Schema as EBNF (xgrammar's converter: strict, one line).
 * NOTE: xgrammar 0.1.27 writes the characters of a length-bounded string (minLength/maxLength) as
 * `[^"\\\r\n]`, which lets raw control characters through (JSON forbids them: the output would not parse);
 * they are excluded here, as in its unbounded strings (`[^\0-\x1f"\\\r\n]`).
 */
async function jsonSchemaEbnf(schema: string): Promise<string> {
  const ebnf = await xgrammar().Testings._jsonSchemaToEBNF(schema, false, -1);
  return ebnf.replace(/\[\^\\?"\\\\\\r\\n\]/g, '[^\\0-\\x1f"\\\\]');
}

/** A structural tag whose JSON Schema contents are replaced by their (fixed) EBNF. */
async function patchTag(v: unknown): Promise<unknown> {
  if (Array.isArray(v)) return Promise.all(v.map(patchTag));
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  if (o.type === "json_schema" && "json_schema" in o) {
    return { type: "grammar", grammar: await jsonSchemaEbnf(JSON.stringify(o.json_schema)) };
  }
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(o)) out[k] = await patchTag(x);
  return out;
}

async function compileWith(c: GrammarCompiler, spec: StructuredSpec): Promise<CompiledGrammar> {
  switch (spec.kind) {
    case "json_schema":
      return c.compileGrammar(await jsonSchemaEbnf(spec.schema));
    case "json_object":
      return c.compileGrammar(await jsonSchemaEbnf('{"type": "object"}'));
    case "regex":
      return c.compileStructuralTag(tagOf({ type: "regex", pattern: spec.pattern }));
    case "choice":
      return c.compileStructuralTag(
        tagOf({ type: "or", elements: spec.choices.map((value) => ({ type: "const_string", value })) }),
      );
    case "grammar":
      return c.compileGrammar(spec.ebnf);
    case "structural_tag":
      return c.compileStructuralTag(JSON.stringify(await patchTag(JSON.parse(spec.tag) as unknown)));
  }
}
