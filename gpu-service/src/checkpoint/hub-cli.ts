#!/usr/bin/env -S node --import tsx
/**
 * Downloads a MiniCPM-V 2.6 checkpoint from the Hugging Face Hub (only the files the stack reads).
 *
 *   npm run download -- openbmb/MiniCPM-V-2_6 [--revision R] [--out DIR]
 *   tsx gpu-service/src/checkpoint/hub-cli.ts openbmb/MiniCPM-V-2_6 [--revision R] [--out DIR]
 *
 * Without --out the files go to the Hugging Face hub cache (HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub), where `hf download`, transformers and vLLM find them too; with --out, into DIR as
 * plain files. Environment: HF_TOKEN (gated or private repositories), HF_ENDPOINT (a mirror; default
 * https://huggingface.co). On a terminal: a progress bar per file (bytes, rate, ETA); otherwise one JSON line
 * per file now and then. Last line: `{"msg":"downloaded","dir":...}`. Ctrl-C stops it (exit 130); run it again
 * to resume. Exit 1 with the error message on failure.
 */

import { parseArgs } from "node:util";
import { fromHubProgress, ProgressReporter } from "../progress";
import { downloadFromHub, HubError, hubEnv } from "./hub";
import { hubCacheDir } from "./hub-cache";

const USAGE = "usage: hub-cli.ts <org>/<name> [--revision R] [--out DIR]\n";

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      revision: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help || positionals.length !== 1) {
    process.stdout.write(USAGE);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  const progress = new ProgressReporter({
    logger: { info: (obj, msg) => process.stdout.write(`${JSON.stringify({ msg, ...obj })}\n`) },
  });
  try {
    const dir = await downloadFromHub({
      repo: positionals[0] as string,
      ...(values.revision ? { revision: values.revision } : {}),
      ...(values.out ? { dir: values.out } : { cacheDir: hubCacheDir(process.env) }),
      ...hubEnv(process.env),
      signal: controller.signal,
      onProgress: (p) => {
        const u = fromHubProgress(p);
        if (u) progress.update(u);
      },
    });
    progress.stop();
    process.stdout.write(`${JSON.stringify({ msg: "downloaded", dir })}\n`);
  } finally {
    progress.stop();
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof HubError && err.code === "aborted") {
    process.stderr.write(`${err.message}; run the same command again to resume\n`);
    process.exitCode = 130;
    return;
  }
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
