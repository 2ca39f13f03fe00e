/**
 * MiniCPM-V 2.6's added tokens and chat template (MINICPMV26.md §2, §6.3).
 *
 * Ids 0..151642 are the Qwen2 byte-level BPE; 151643..151645 are Qwen2's own chat specials and
 * MiniCPM-V adds 151646..151665. `<unk>` is the BPE's own entry 128244, declared special.
 */

/** One added token as it appears in `tokenizer.json` / `tokenizer_config.json`. */
export interface AddedTokenSpec {
  readonly id: number;
  readonly content: string;
}

/** The MiniCPM-V 2.6 added tokens, in id order (all special, none normalized or stripped). */
export const MINICPMV_ADDED_TOKENS: readonly AddedTokenSpec[] = [
  { id: 128244, content: "<unk>" },
  { id: 151643, content: "<|endoftext|>" },
  { id: 151644, content: "<|im_start|>" },
  { id: 151645, content: "<|im_end|>" },
  { id: 151646, content: "<image>" },
  { id: 151647, content: "</image>" },
  { id: 151648, content: "<ref>" },
  { id: 151649, content: "</ref>" },
  { id: 151650, content: "<box>" },
  { id: 151651, content: "</box>" },
  { id: 151652, content: "<quad>" },
  { id: 151653, content: "</quad>" },
  { id: 151654, content: "<point>" },
  { id: 151655, content: "</point>" },
  { id: 151656, content: "<slice>" },
  { id: 151657, content: "</slice>" },
  { id: 151658, content: "<image_id>" },
  { id: 151659, content: "</image_id>" },
  { id: 151660, content: "<|reserved_special_token_0|>" },
  { id: 151661, content: "<|reserved_special_token_1|>" },
  { id: 151662, content: "<|reserved_special_token_2|>" },
  { id: 151663, content: "<|reserved_special_token_3|>" },
  { id: 151664, content: "<|reserved_special_token_4|>" },
  { id: 151665, content: "<|reserved_special_token_5|>" },
];

/** Names of the specials the rest of the stack refers to, with their strings. */
export const SPECIAL_STRINGS = {
  imStart: "<|im_start|>",
  imEnd: "<|im_end|>",
  endOfText: "<|endoftext|>",
  image: "<image>",
  imageEnd: "</image>",
  slice: "<slice>",
  sliceEnd: "</slice>",
  imageId: "<image_id>",
  imageIdEnd: "</image_id>",
  unk: "<unk>",
} as const;

export type SpecialName = keyof typeof SPECIAL_STRINGS;

/** Ids of the named specials. */
export type SpecialIds = Readonly<Record<SpecialName, number>>;

/** Vocabulary size of MiniCPM-V 2.6 (151,643 BPE tokens + 23 added ids). */
export const MINICPMV_VOCAB_SIZE = 151666;

/** Default system prompt inserted by the chat template when the first message is not `system`. */
export const DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant.";

/**
 * ChatML with a default system block (MINICPMV26.md §6.3); byte-identical to the golden
 * `tokenizer_config.json` of tiny-a.
 */
export const CHAT_TEMPLATE =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
  "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}" +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
