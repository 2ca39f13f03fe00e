import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { ByteLevelDecoder, Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { SPECIAL_STRINGS, type SpecialIds, type SpecialName } from "./special-tokens";
import { UserTextEscaper } from "./user-text-escaper";

/** One chat message as the chat template sees it (content is already plain text). */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/**
 * A loaded tokenizer: the checkpoint's `tokenizer.json` run by @huggingface/tokenizers and its
 * `tokenizer_config.json` chat template run by @huggingface/jinja.
 */
export interface Tokenizer {
  /** Encodes like HF (`add_special_tokens=False`): special strings anywhere in `text` become their ids. */
  encode(text: string): number[];
  /** Encodes every character as ordinary text: special-token strings are split into BPE pieces. */
  encodePlain(text: string): number[];
  /** Replaces every special-token string in user text by a private-use sentinel form (see `unescape`). */
  escapeUserText(text: string): string;
  /** Reverses `escapeUserText` (display text). */
  unescape(text: string): string;
  /**
   * Encodes a rendered prompt: real special strings become their ids, the text between them is
   * unescaped and encoded plain. Equals `encode` for text that holds no escaped user text.
   */
  encodeRendered(rendered: string): number[];
  /** Decodes ids (special tokens kept unless `skipSpecialTokens`); invalid UTF-8 becomes U+FFFD. */
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** Raw bytes of one token after byte-level decoding (UTF-8 of the content for added tokens). */
  tokenBytes(id: number): Uint8Array;
  /** `tokenBytes(id)` decoded as UTF-8 with replacement characters (logprobs display). */
  tokenText(id: number): string;
  /** Whether `id` is a special (added, `special: true`) token. */
  isSpecial(id: number): boolean;
  /** Number of ids (largest id + 1); 151666 for MiniCPM-V 2.6. */
  readonly vocabSize: number;
  /** Ids of the MiniCPM-V specials by name. */
  readonly specialIds: SpecialIds;
  /** Generation stops on these: `<|im_end|>`, `<|endoftext|>`. */
  readonly terminators: readonly number[];
  /** Renders the chat template. Message content is inserted verbatim (escape user text first). */
  renderChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt: boolean }): string;
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
}

const ROLES = new Set(["system", "user", "assistant"]);

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Reads `tokenizer.json` and `tokenizer_config.json` from a checkpoint directory. */
export async function loadTokenizer(modelDir: string): Promise<Tokenizer> {
  const read = async (name: string): Promise<Record<string, unknown>> => {
    const path = join(modelDir, name);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      throw new Error(`${path}: cannot read tokenizer file (${(err as Error).message})`);
    }
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch (err) {
      throw new Error(`${path}: invalid JSON (${(err as Error).message})`);
    }
  };
  const [tokenizerJson, tokenizerConfig] = await Promise.all([read("tokenizer.json"), read("tokenizer_config.json")]);
  return createTokenizer(tokenizerJson, tokenizerConfig, modelDir);
}

/** Builds a tokenizer from already-parsed files (`source` names them in errors). */
export function createTokenizer(
  tokenizerJson: Record<string, unknown>,
  tokenizerConfig: Record<string, unknown>,
  source = "tokenizer",
): Tokenizer {
  return new HfBackedTokenizer(tokenizerJson, tokenizerConfig, source);
}

class HfBackedTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly specialIds: SpecialIds;
  readonly terminators: readonly number[];
  private readonly hf: HfTokenizer;
  private readonly template: Template;
  private readonly templateVars: Record<string, unknown>;
  private readonly addedById = new Map<number, AddedTokenJson>();
  private readonly addedByContent = new Map<string, AddedTokenJson>();
  private readonly specialSplitter: RegExp | null;
  private readonly escaper: UserTextEscaper;
  private readonly byteDecoder: Record<string, number>;
  private readonly bytesCache = new Map<number, Uint8Array>();

  constructor(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown>, source: string) {
    this.hf = new HfTokenizer(tokenizerJson, tokenizerConfig);
    const model = this.hf.model;
    if (!model) throw new Error(`${source}/tokenizer.json: no model`);
    const decoderType = (tokenizerJson.decoder as { type?: string } | undefined)?.type;
    if (decoderType !== "ByteLevel") {
      throw new Error(`${source}/tokenizer.json: decoder.type is ${String(decoderType)}, expected ByteLevel`);
    }
    const added = (tokenizerJson.added_tokens ?? []) as AddedTokenJson[];
    for (const t of added) {
      this.addedById.set(t.id, t);
      this.addedByContent.set(t.content, t);
    }
    this.vocabSize = model.vocab.length;

    const ids: Partial<Record<SpecialName, number>> = {};
    for (const [name, content] of Object.entries(SPECIAL_STRINGS) as [SpecialName, string][]) {
      const t = this.addedByContent.get(content);
      if (!t) throw new Error(`${source}/tokenizer.json: added_tokens lacks the special token ${content}`);
      ids[name] = t.id;
    }
    this.specialIds = Object.freeze(ids as Record<SpecialName, number>);
    this.terminators = Object.freeze([this.specialIds.imEnd, this.specialIds.endOfText]);

    // Longest first, so that a special that is a prefix of another never wins (HF matches leftmost-longest).
    const contents = [...this.addedByContent.keys()].sort((a, b) => b.length - a.length);
    this.specialSplitter = contents.length ? new RegExp(`(${contents.map(escapeRegExp).join("|")})`, "g") : null;
    this.escaper = new UserTextEscaper(contents);

    const template = tokenizerConfig.chat_template;
    if (typeof template !== "string") {
      throw new Error(`${source}/tokenizer_config.json: chat_template must be a string`);
    }
    this.template = new Template(template);
    this.templateVars = {
      bos_token: tokenizerConfig.bos_token ?? "",
      eos_token: tokenizerConfig.eos_token ?? "",
      pad_token: tokenizerConfig.pad_token ?? "",
      unk_token: tokenizerConfig.unk_token ?? "",
    };
    this.byteDecoder = new ByteLevelDecoder({ type: "ByteLevel" }).byte_decoder;
  }

  encode(text: string): number[] {
    return this.hf.encode(text, { add_special_tokens: false }).ids;
  }

  encodePlain(text: string): number[] {
    // NOTE: this is the library's own pipeline for one section between added tokens
    // (normalize -> pre-tokenize -> BPE), so ids equal `encode` wherever `text` holds no special string.
    if (text.length === 0) return [];
    const normalized = this.hf.normalizer ? this.hf.normalizer(text) : text;
    if (normalized.length === 0) return [];
    const words = this.hf.pre_tokenizer ? this.hf.pre_tokenizer(normalized, { section_index: 0 }) : [normalized];
    const model = this.hf.model as NonNullable<HfTokenizer["model"]>;
    return model(words).map((token) => {
      const id = model.tokens_to_ids.get(token);
      if (id === undefined) throw new Error(`BPE produced token ${JSON.stringify(token)} that has no id`);
      return id;
    });
  }

  escapeUserText(text: string): string {
    return this.escaper.escape(text);
  }

  unescape(text: string): string {
    return this.escaper.unescape(text);
  }

  encodeRendered(rendered: string): number[] {
    if (!this.specialSplitter) return this.encodePlain(this.unescape(rendered));
    const out: number[] = [];
    // split() with a capture group alternates [text, special, text, special, ..., text].
    const parts = rendered.split(this.specialSplitter);
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i] as string;
      if (i % 2 === 1) out.push((this.addedByContent.get(part) as AddedTokenJson).id);
      else if (part.length > 0) for (const id of this.encodePlain(this.unescape(part))) out.push(id);
    }
    return out;
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return "";
    for (const id of ids) this.checkId(id);
    return this.hf.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  tokenBytes(id: number): Uint8Array {
    const cached = this.bytesCache.get(id);
    if (cached) return cached;
    this.checkId(id);
    const added = this.addedById.get(id);
    let bytes: Uint8Array;
    if (added) {
      bytes = new TextEncoder().encode(added.content);
    } else {
      const token = this.hf.id_to_token(id);
      if (token === undefined) throw new RangeError(`token id ${id} has no vocabulary entry`);
      const chars = [...token];
      bytes = new Uint8Array(chars.length);
      chars.forEach((c, i) => {
        const b = this.byteDecoder[c];
        if (b === undefined) throw new Error(`token ${id} (${JSON.stringify(token)}) is not byte-level encoded`);
        bytes[i] = b;
      });
    }
    this.bytesCache.set(id, bytes);
    return bytes;
  }

  tokenText(id: number): string {
    return new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(this.tokenBytes(id));
  }

  isSpecial(id: number): boolean {
    return this.addedById.get(id)?.special === true;
  }

  renderChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt: boolean }): string {
    messages.forEach((m, i) => {
      if (!ROLES.has(m.role)) throw new Error(`messages[${i}].role must be system, user or assistant, got ${m.role}`);
      if (typeof m.content !== "string") throw new Error(`messages[${i}].content must be a string`);
    });
    return this.template.render({
      ...this.templateVars,
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: opts.addGenerationPrompt,
    });
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
    }
  }
}
