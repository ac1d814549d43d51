// A small byte-level BPE tokenizer built from a text corpus, in the Hugging Face tokenizer.json format (the one
// Qwen3 uses: split regex, GPT-2 byte-to-character map, BPE merges, ChatML special tokens), so that the default
// job can train a tiny Qwen3 without downloading anything. Any text encodes: the 256 byte tokens cover every
// byte, and the merges learned from the corpus only make frequent pieces shorter.

/** Special tokens after the byte and merge tokens, in id order. */
export const BYTE_TOKENIZER_SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<think>', '</think>'] as const;

/**
 * Pre-tokenizer split (Qwen2's regex without its case-insensitive group, which JavaScript regexes lack): words
 * with one leading non-letter, single digits, punctuation runs, newlines and spaces. Merges never cross these
 * pieces, so each digit of a number stays its own token.
 */
const SPLIT_PATTERN = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** ChatML, as Qwen3's template renders it for plain messages; enable_thinking false adds the empty thought. */
export const BYTE_TOKENIZER_CHAT_TEMPLATE = [
  '{%- for message in messages -%}',
  "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}",
  '{%- endfor -%}',
  '{%- if add_generation_prompt -%}',
  "{{- '<|im_start|>assistant\\n' -}}",
  "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}",
  '{%- endif -%}',
].join('\n');

/**
 * GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the others (control bytes,
 * space, 0x7f-0xa0, 0xad) take the characters from U+0100 on, so every byte is one visible character.
 */
export function byteToChar(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = [];
  let next = 0x100;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable(b) ? b : next++));
  return out;
}

export interface ByteTokenizerFiles {
  /** tokenizer.json content. */
  tokenizer: Record<string, unknown>;
  /** tokenizer_config.json content. */
  config: Record<string, unknown>;
  vocabSize: number;
}

/** Pieces of `text` as the pre-tokenizer splits them, each spelled in byte characters. */
function pieces(text: string, chars: string[]): string[] {
  const encoder = new TextEncoder();
  return (text.normalize('NFC').match(new RegExp(SPLIT_PATTERN, 'gu')) ?? []).map((p) => Array.from(encoder.encode(p), (b) => chars[b]!).join(''));
}

/**
 * Learn `mergeCount` BPE merges from `corpus`: repeatedly join the most frequent adjacent pair of symbols inside
 * pre-tokenizer pieces (ties go to the pair that sorts first, so the result depends only on the corpus).
 */
function learnMerges(corpus: string[], mergeCount: number, chars: string[]): [string, string][] {
  const counts = new Map<string, number>();
  for (const text of corpus) for (const p of pieces(text, chars)) counts.set(p, (counts.get(p) ?? 0) + 1);
  const words = [...counts].map(([p, n]) => ({ symbols: Array.from(p), n }));
  const merges: [string, string][] = [];
  while (merges.length < mergeCount) {
    const pairs = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.symbols.length; i++) {
        const key = `${w.symbols[i]} ${w.symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + w.n);
      }
    }
    let best: string | undefined;
    let bestCount = 0;
    for (const [key, n] of pairs) if (n > bestCount || (n === bestCount && best !== undefined && key < best)) [best, bestCount] = [key, n];
    if (best === undefined) break;
    const [a, b] = best.split(' ') as [string, string];
    merges.push([a, b]);
    for (const w of words) {
      const joined: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (i + 1 < w.symbols.length && w.symbols[i] === a && w.symbols[i + 1] === b) {
          joined.push(a + b);
          i++;
        } else joined.push(w.symbols[i]!);
      }
      w.symbols = joined;
    }
  }
  return merges;
}

/**
 * tokenizer.json and tokenizer_config.json of a byte-level BPE tokenizer with `vocabSize` tokens: ids 0-255 are
 * the bytes, then the merges learned from `corpus`, then the special tokens (<|im_end|> is the end of a turn).
 */
export function buildByteTokenizer(corpus: string[], vocabSize: number): ByteTokenizerFiles {
  const special = BYTE_TOKENIZER_SPECIAL_TOKENS.length;
  if (!Number.isInteger(vocabSize) || vocabSize < 256 + special) throw new Error(`vocabSize must be an integer >= ${256 + special}, got ${vocabSize}`);
  const chars = byteToChar();
  const merges = learnMerges(corpus, vocabSize - 256 - special, chars);
  const vocab: Record<string, number> = {};
  chars.forEach((c, id) => (vocab[c] = id));
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  const firstSpecial = 256 + merges.length;
  const addedTokens = BYTE_TOKENIZER_SPECIAL_TOKENS.map((content, i) => ({
    id: firstSpecial + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [{ type: 'Split', pattern: { Regex: SPLIT_PATTERN }, behavior: 'Isolated', invert: false }, byteLevel],
    },
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  };
  const config = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(addedTokens.map(({ id, ...t }) => [String(id), t])),
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    chat_template: BYTE_TOKENIZER_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: 32768,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
  return { tokenizer, config, vocabSize: firstSpecial + special };
}
