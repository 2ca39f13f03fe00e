/**
 * Reversible escaping of special-token strings in user text.
 *
 * User text must never forge `<image>`, `<unk>`, `<|im_end|>` ...: before the chat template is
 * rendered, each special string in user text becomes ESC + a private-use code (U+E100 + its index),
 * and a literal ESC becomes ESC ESC. The rendered prompt then holds real special strings only where
 * the server put them; `unescape` restores the user's characters before they are BPE-encoded.
 */

/** The escape lead character (private use area). */
const ESC = "\uE000";
const CODE_BASE = 0xe100;
const CODE_LIMIT = 0xf8ff;

export class UserTextEscaper {
  private readonly specials: readonly string[];
  private readonly findSpecialOrEsc: RegExp;
  private readonly findEscaped = /\uE000([\s\S])/g;
  private readonly indexOf = new Map<string, number>();

  /** `specials` must be sorted longest first. */
  constructor(specials: readonly string[]) {
    if (CODE_BASE + specials.length > CODE_LIMIT)
      throw new Error(`too many special tokens to escape: ${specials.length}`);
    this.specials = specials;
    for (const [i, s] of specials.entries()) this.indexOf.set(s, i);
    const alternatives = [...specials.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")), ESC];
    this.findSpecialOrEsc = new RegExp(alternatives.join("|"), "g");
  }

  escape(text: string): string {
    return text.replace(this.findSpecialOrEsc, (m) =>
      m === ESC ? ESC + ESC : ESC + String.fromCharCode(CODE_BASE + (this.indexOf.get(m) as number)),
    );
  }

  unescape(text: string): string {
    if (!text.includes(ESC)) return text;
    return text.replace(this.findEscaped, (m, code: string) => {
      if (code === ESC) return ESC;
      const special = this.specials[code.charCodeAt(0) - CODE_BASE];
      // A lone ESC not produced by `escape` stays as it was.
      return special ?? m;
    });
  }
}
