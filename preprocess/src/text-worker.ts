/** Worker-thread entry of `WorkerTextRunner`: loads a tokenizer and runs tokenizer jobs in arrival order. */

import { parentPort, workerData } from "node:worker_threads";
import { PreprocessError } from "./errors";
import { buildPrompt } from "./prompt";
import { countTokensUpTo, type TextJob, type TokenizerSource } from "./text-runner";
import { buildTokenizerFiles, createTokenizer, loadTokenizer, type Tokenizer } from "./tokenizer";

if (!parentPort) throw new Error("text-worker.ts must run in a worker thread");
const port = parentPort;
const source = (workerData as { source: TokenizerSource }).source;

async function load(): Promise<Tokenizer> {
  if ("modelDir" in source) return await loadTokenizer(source.modelDir);
  const files = buildTokenizerFiles();
  return createTokenizer(files.tokenizerJson, files.tokenizerConfig, "built-in");
}

function run(tok: Tokenizer, job: TextJob): unknown {
  switch (job.op) {
    case "build":
      return buildPrompt(tok, job.turns, job.addGenerationPrompt);
    case "encode":
      return tok.encode(job.text);
    case "decode":
      return tok.decode(job.ids);
    case "count":
      return countTokensUpTo(tok, job.texts, job.limit, job.special);
  }
}

load().then(
  (tok) => {
    port.on("message", (m: { id: number; job: TextJob }) => {
      try {
        port.postMessage({ id: m.id, ok: true, result: run(tok, m.job) });
      } catch (err) {
        const kind = err instanceof PreprocessError ? err.kind : "internal";
        port.postMessage({ id: m.id, ok: false, kind, message: err instanceof Error ? err.message : String(err) });
      }
    });
    port.postMessage({ ready: true });
  },
  (err: unknown) => port.postMessage({ error: err instanceof Error ? err.message : String(err) }),
);
