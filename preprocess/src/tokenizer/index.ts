/**
 * MiniCPM-V 2.6 tokenizer: Qwen2 byte-level BPE + MiniCPM-V added tokens, ChatML chat template,
 * streaming detokenisation. Used by preprocess (encoding) and gpu-service (decoding, checkpoint files).
 */

export { IncrementalDecoder } from "./incremental-decoder";
export {
  type AddedTokenSpec,
  CHAT_TEMPLATE,
  DEFAULT_SYSTEM_PROMPT,
  MINICPMV_ADDED_TOKENS,
  MINICPMV_VOCAB_SIZE,
  SPECIAL_STRINGS,
  type SpecialIds,
  type SpecialName,
} from "./special-tokens";
export { type ChatMessage, createTokenizer, loadTokenizer, type Tokenizer } from "./tokenizer";
export { buildTokenizerFiles, type TokenizerFiles } from "./tokenizer-files";
