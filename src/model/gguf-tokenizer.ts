// The tokenizer of a GGUF model as the Hugging Face files it was converted from: tokenizer.json (byte-level BPE with
// Qwen2's pre-tokenizer) and tokenizer_config.json (special tokens, chat template), rebuilt from the
// tokenizer.ggml.* metadata that llama.cpp's converter (and gguf/tokenizer-gguf.ts) writes. No Node API.
import { fileError } from '../errors.js';
import { TokenType, type GgufFile } from './gguf-format.js';

// Qwen2's pre-tokenizer (tokenizer.ggml.pre "qwen2", which Qwen3 uses): the split regex, then byte-level mapping.
const QWEN2_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const BYTE_LEVEL = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };

function stringArray(f: GgufFile, key: string): string[] {
  const v = f.metadata.get(key);
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw fileError(f.path, `metadata ${key} is ${v === undefined ? 'missing' : 'not a list of strings'}`);
  return v as string[];
}

/** Parsed tokenizer.json and tokenizer_config.json equivalent to the GGUF's tokenizer. */
export function tokenizerFilesFromGguf(f: GgufFile): { json: Record<string, unknown>; config: Record<string, unknown> } {
  const model = f.metadata.get('tokenizer.ggml.model');
  const pre = f.metadata.get('tokenizer.ggml.pre');
  if (model !== 'gpt2' || pre !== 'qwen2') {
    throw fileError(f.path, `tokenizer ${JSON.stringify(model)} with pre-tokenizer ${JSON.stringify(pre)} is not supported (Qwen's byte-level BPE: "gpt2" with "qwen2")`);
  }
  const tokens = stringArray(f, 'tokenizer.ggml.tokens');
  const typesRaw = f.metadata.get('tokenizer.ggml.token_type');
  const types = Array.isArray(typesRaw) && typesRaw.length === tokens.length ? (typesRaw as number[]) : undefined;
  if (!types) throw fileError(f.path, 'metadata tokenizer.ggml.token_type is missing or not one type per token');
  const merges = f.metadata.has('tokenizer.ggml.merges') ? stringArray(f, 'tokenizer.ggml.merges') : [];

  const vocab: Record<string, number> = {};
  const added: Record<string, unknown>[] = [];
  tokens.forEach((token, id) => {
    const type = types[id];
    if (type === TokenType.NORMAL) vocab[token] = id;
    else if (type === TokenType.CONTROL || type === TokenType.USER_DEFINED) {
      added.push({ id, content: token, single_word: false, lstrip: false, rstrip: false, normalized: type !== TokenType.CONTROL, special: type === TokenType.CONTROL });
    } else if (type !== TokenType.UNUSED) throw fileError(f.path, `token ${id} has token type ${type}, which a byte-level BPE vocabulary does not use`);
  });
  const json = {
    version: '1.0',
    added_tokens: added,
    normalizer: { type: 'NFC' },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: QWEN2_SPLIT }, behavior: 'Isolated', invert: false }, BYTE_LEVEL] },
    post_processor: BYTE_LEVEL,
    decoder: BYTE_LEVEL,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };

  const tokenOf = (key: string): string | null => {
    const id = f.metadata.get(key);
    if (id === undefined) return null;
    if (typeof id !== 'number' || !(id >= 0 && id < tokens.length)) throw fileError(f.path, `metadata ${key} is ${JSON.stringify(id)}, not a token id`);
    return tokens[id]!;
  };
  const config: Record<string, unknown> = {
    bos_token: tokenOf('tokenizer.ggml.bos_token_id'),
    eos_token: tokenOf('tokenizer.ggml.eos_token_id'),
    pad_token: tokenOf('tokenizer.ggml.padding_token_id'),
    add_bos_token: f.metadata.get('tokenizer.ggml.add_bos_token') === true,
    clean_up_tokenization_spaces: false,
  };
  const template = f.metadata.get('tokenizer.chat_template');
  if (typeof template === 'string') config.chat_template = template;
  return { json, config };
}
