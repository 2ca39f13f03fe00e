/**
 * Structured-output benchmark (not a test): what constrained decoding costs at MiniCPM-V 2.6's vocabulary
 * (151,666 tokens, the tiny-a checkpoint's tokenizer, which is the real one).
 *
 *   npx tsx bench/structured.ts [--tokens 200] [--seqs 8]
 *
 * Reports:
 *  - the one-time tokenizer tables (xgrammar TokenizerInfo + compiler);
 *  - compile time per spec (first compile, then a cache hit);
 *  - per token per sequence: filling the bitmask (xgrammar), applying it to the logits (-Infinity), and
 *    advancing the matcher, over `--tokens` tokens sampled under the grammar from random logits, for `--seqs`
 *    sequences (mean, p50, p99 in ms).
 */
import { parseArgs } from "node:util";
import { loadTokenizer } from "@minicpmv/preprocess/tokenizer";
import { ensureTinyCheckpoint } from "../gpu-service/src/checkpoint";
import type { StructuredSpec, TokenMatcher } from "../gpu-service/src/engine/types";
import { Grammars } from "../gpu-service/src/grammar/grammars";
import { applyTokenMask } from "../gpu-service/src/grammar/token-mask";

const { values: args } = parseArgs({
  options: { tokens: { type: "string", default: "200" }, seqs: { type: "string", default: "8" } },
});
const TOKENS = Number(args.tokens);
const SEQS = Number(args.seqs);

const RECEIPT = {
  type: "object",
  properties: {
    merchant: { type: "string", maxLength: 40 },
    date: { type: "string", pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" },
    total: { type: "number" },
    currency: { enum: ["EUR", "USD", "GBP"] },
    items: {
      type: "array",
      items: {
        type: "object",
        properties: { name: { type: "string" }, qty: { type: "integer" }, price: { type: "number" } },
        required: ["name", "qty", "price"],
        additionalProperties: false,
      },
    },
  },
  required: ["merchant", "date", "total", "currency", "items"],
  additionalProperties: false,
};

const SPECS: [string, StructuredSpec][] = [
  [
    "small JSON Schema",
    {
      kind: "json_schema",
      schema: JSON.stringify({
        type: "object",
        properties: { name: { type: "string" }, age: { type: "integer" } },
        required: ["name", "age"],
      }),
    },
  ],
  ["receipt JSON Schema (nested)", { kind: "json_schema", schema: JSON.stringify(RECEIPT) }],
  ["json_object", { kind: "json_object" }],
  ["regex", { kind: "regex", pattern: "[A-Z]{2}-[0-9]{3,4} [a-z ]{0,40}" }],
  ["choice (3)", { kind: "choice", choices: ["positive", "negative", "neutral"] }],
  ["EBNF", { kind: "grammar", ebnf: 'root ::= expr\nexpr ::= term ("+" term)*\nterm ::= [0-9]+ | "(" expr ")"' }],
];

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] as number;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return `mean ${mean.toFixed(3)}  p50 ${q(0.5).toFixed(3)}  p99 ${q(0.99).toFixed(3)}`;
}

const dir = await ensureTinyCheckpoint();
const tok = await loadTokenizer(dir);
const grammars = new Grammars({
  vocabSize: tok.vocabSize,
  tokenBytes: (id) => tok.tokenBytes(id),
  isSpecial: (id) => tok.isSpecial(id),
  terminators: tok.terminators,
});
let t = performance.now();
await grammars.warmUp();
console.log(
  `vocabulary ${tok.vocabSize}: tokenizer tables (once per process) ${(performance.now() - t).toFixed(0)} ms`,
);

console.log("\ncompile (first / cached), ms:");
for (const [name, spec] of SPECS) {
  t = performance.now();
  await grammars.compile(spec);
  const first = performance.now() - t;
  t = performance.now();
  await grammars.compile(spec);
  console.log(`  ${name.padEnd(30)} ${first.toFixed(1).padStart(8)} / ${(performance.now() - t).toFixed(3)}`);
}

// Random logits: a fixed pool of noise vectors (generating 151k randoms per token would dominate).
let seed = 12345;
const rand = () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 2 ** 32;
};
const noise = Array.from({ length: 8 }, () => Float32Array.from({ length: tok.vocabSize }, () => rand() * 8 - 4));
const argmax = (x: Float32Array) => {
  let best = 0;
  for (let i = 1; i < x.length; i++) if ((x[i] as number) > (x[best] as number)) best = i;
  return best;
};

console.log(`\nper token per sequence, ms (${SEQS} sequences x up to ${TOKENS} tokens, vocabulary ${tok.vocabSize}):`);
for (const [name, spec] of SPECS) {
  const fill: number[] = [];
  const apply: number[] = [];
  const accept: number[] = [];
  const c = await grammars.compile(spec);
  const logits = new Float32Array(tok.vocabSize);
  for (let s = 0; s < SEQS; s++) {
    const m: TokenMatcher = await c.matcher(tok.terminators);
    for (let k = 0; k < TOKENS; k++) {
      logits.set(noise[(s + k) % noise.length] as Float32Array);
      let t0 = performance.now();
      const mask = await m.nextMask();
      fill.push(performance.now() - t0);
      t0 = performance.now();
      applyTokenMask(logits, mask);
      apply.push(performance.now() - t0);
      const id = argmax(logits);
      t0 = performance.now();
      m.accept(id);
      accept.push(performance.now() - t0);
      if (tok.terminators.includes(id)) break;
    }
    m.dispose();
  }
  const total = fill.map((f, i) => f + (apply[i] as number) + (accept[i] as number));
  console.log(`  ${name} (${fill.length} tokens)`);
  console.log(`    fill bitmask   ${stats(fill)}`);
  console.log(`    apply mask     ${stats(apply)}`);
  console.log(`    accept token   ${stats(accept)}`);
  console.log(`    total          ${stats(total)}`);
}
console.log(`\nlive matchers after the run: ${grammars.stats().liveMatchers}`);
