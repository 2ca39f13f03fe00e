/**
 * Tokenizing, off the gRPC thread. BPE over a long text without spaces (a run of one letter, CJK) costs
 * seconds, superlinearly in its length: on the thread that serves gRPC it would stall every other call.
 * `WorkerTextRunner` runs the tokenizer on its own thread; `InlineTextRunner` runs it in place (tests, tools).
 *
 *   prepare() ─ countUpTo(texts, limit) ─► chunked count, stops once past the limit (a huge prompt costs
 *             │                            only as much as the limit, never its full length)
 *             ─ build(turns) / raw(...) ──► the exact token ids (only for prompts that passed the count)
 */

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { PreprocessError, type PreprocessErrorKind } from "./errors";
import { type BuiltPrompt, buildPrompt, type PromptTurn } from "./prompt";
import type { Tokenizer } from "./tokenizer";

/** The tokenizer work of one request. */
export interface TextRunner {
  /** Renders and tokenizes a chat (see `buildPrompt`). */
  build(turns: readonly PromptTurn[], addGenerationPrompt: boolean): Promise<BuiltPrompt>;
  /** `raw_prompt` encoded like HF `tokenizer(text)`. */
  encode(text: string): Promise<number[]>;
  /** Token ids -> text. */
  decode(ids: readonly number[]): Promise<string>;
  /**
   * Tokens of `texts` (plain text), counted piece by piece; stops as soon as the count passes `limit` and
   * returns the count so far. Pieces are cut at white space, so the count is close to the exact one.
   * `special`: special-token strings count as their one token (raw prompts); else as plain text (chat text).
   */
  countUpTo(texts: readonly string[], limit: number, special?: boolean): Promise<number>;
  close(): Promise<void>;
}

/** Characters tokenized at once by `countUpTo`. */
const COUNT_PIECE = 2048;

/** See {@link TextRunner.countUpTo}. */
export function countTokensUpTo(tok: Tokenizer, texts: readonly string[], limit: number, special = false): number {
  let n = 0;
  for (const text of texts) {
    for (let at = 0; at < text.length; ) {
      let end = Math.min(text.length, at + COUNT_PIECE);
      if (end < text.length) {
        const space = text.lastIndexOf(" ", end);
        if (space > at) end = space;
      }
      const piece = text.slice(at, end);
      n += (special ? tok.encode(piece) : tok.encodePlain(piece)).length;
      if (n > limit) return n;
      at = end;
    }
  }
  return n;
}

/** Runs the tokenizer on the calling thread. */
export class InlineTextRunner implements TextRunner {
  constructor(private readonly tok: Tokenizer) {}
  async build(turns: readonly PromptTurn[], addGenerationPrompt: boolean): Promise<BuiltPrompt> {
    return buildPrompt(this.tok, turns, addGenerationPrompt);
  }
  async encode(text: string): Promise<number[]> {
    return this.tok.encode(text);
  }
  async decode(ids: readonly number[]): Promise<string> {
    return this.tok.decode(ids);
  }
  async countUpTo(texts: readonly string[], limit: number, special = false): Promise<number> {
    return countTokensUpTo(this.tok, texts, limit, special);
  }
  async close(): Promise<void> {}
}

/** A message to the tokenizer worker. */
export type TextJob =
  | { op: "build"; turns: readonly PromptTurn[]; addGenerationPrompt: boolean }
  | { op: "encode"; text: string }
  | { op: "decode"; ids: readonly number[] }
  | { op: "count"; texts: readonly string[]; limit: number; special: boolean };

type Reply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; kind: PreprocessErrorKind; message: string };

/** Where the worker loads its tokenizer from: a checkpoint directory, or the built-in files. */
export type TokenizerSource = { modelDir: string } | { builtIn: true };

function bootstrap(): string {
  const api = createRequire(import.meta.url)
    .resolve("tsx/esm/api")
    .replace(/\.cjs$/, ".mjs");
  const entry = new URL("./text-worker.ts", import.meta.url).href;
  return `import(${JSON.stringify(pathToFileURL(api).href)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
}

/** One worker thread with its own tokenizer; jobs run in arrival order. */
export class WorkerTextRunner implements TextRunner {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private nextId = 1;
  private closed = false;

  private constructor(worker: Worker) {
    this.worker = worker;
    worker.on("message", (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      this.idle();
      if (m.ok) p.resolve(m.result);
      else p.reject(new PreprocessError(m.kind, m.message));
    });
    const fail = (why: string) => {
      for (const p of this.pending.values()) p.reject(new PreprocessError("internal", `tokenizer worker: ${why}`));
      this.pending.clear();
    };
    worker.on("error", (err) => fail(err.message));
    worker.on("exit", (code) => {
      if (!this.closed) fail(`exited with code ${code}`);
    });
    worker.unref();
  }

  /** Starts the worker and waits until its tokenizer is loaded. */
  static async start(source: TokenizerSource): Promise<WorkerTextRunner> {
    const worker = new Worker(bootstrap(), { eval: true, workerData: { source } });
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: { ready?: boolean; error?: string }) => {
        if (m.ready) resolve();
        else if (m.error) reject(new Error(`tokenizer worker failed to start: ${m.error}`));
        else return;
        worker.off("message", onMsg);
      };
      worker.on("message", onMsg);
      worker.once("error", reject);
    });
    return new WorkerTextRunner(worker);
  }

  private run<T>(job: TextJob): Promise<T> {
    if (this.closed) return Promise.reject(new PreprocessError("unavailable", "the tokenizer worker is closed"));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.ref();
      this.worker.postMessage({ id, job });
    });
  }

  private idle(): void {
    if (this.pending.size === 0) this.worker.unref();
  }

  build(turns: readonly PromptTurn[], addGenerationPrompt: boolean): Promise<BuiltPrompt> {
    return this.run({ op: "build", turns, addGenerationPrompt });
  }
  encode(text: string): Promise<number[]> {
    return this.run({ op: "encode", text });
  }
  decode(ids: readonly number[]): Promise<string> {
    return this.run({ op: "decode", ids });
  }
  countUpTo(texts: readonly string[], limit: number, special = false): Promise<number> {
    return this.run({ op: "count", texts, limit, special });
  }
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(new PreprocessError("unavailable", "the tokenizer worker closed"));
    this.pending.clear();
    await this.worker.terminate();
  }
}
