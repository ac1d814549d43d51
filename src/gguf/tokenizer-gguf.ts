// The tokenizer of an HF model as llama.cpp's converter writes it for a byte-level BPE model
// (convert_hf_to_gguf.py get_vocab_base + gguf-py SpecialVocab): tokens padded to vocab_size, token
// types, merges, special token ids, add_bos/eos flags and the chat template. From parsed JSON, with no Node
// API (the browser demo uses it); tokenizer-metadata.ts reads a model folder.
import { fileError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { TokenType } from '../model/gguf-format.js';
import { gv, type GgufValue } from './gguf-encoder.js';

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  normalized: boolean;
}

/** Added tokens that HF marks special are control tokens; so are ones that look like <|...|> (the converter's heuristic). */
function looksSpecial(token: string): boolean {
  return (token.startsWith('<|') && token.endsWith('|>')) || (token.startsWith('<｜') && token.endsWith('｜>'))
    || ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(token)
    || (token.startsWith('<unused') && token.endsWith('>'));
}

/** "a b" merge strings; pair-form merges have their spaces written as U+0120 as gguf-py does. */
function mergeStrings(merges: unknown, file: string): string[] {
  if (!Array.isArray(merges)) throw fileError(file, 'model.merges is not a list');
  return merges.map((m) => {
    if (typeof m === 'string') return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      return m.map((part: string) => part.replaceAll(' ', '\u0120')).join(' ');
    }
    throw fileError(file, `model.merges holds an entry that is neither "a b" nor ["a", "b"]: ${JSON.stringify(m)}`);
  });
}

/** A tokenizer_config.json token entry: a string or { content }. */
function tokenContent(entry: unknown): string | undefined {
  if (typeof entry === 'string') return entry;
  if (typeof entry === 'object' && entry !== null && typeof (entry as { content?: unknown }).content === 'string') {
    return (entry as { content: string }).content;
  }
  return undefined;
}

const SPECIAL_ID_KEYS = {
  bos: 'tokenizer.ggml.bos_token_id',
  eos: 'tokenizer.ggml.eos_token_id',
  unk: 'tokenizer.ggml.unknown_token_id',
  sep: 'tokenizer.ggml.seperator_token_id',
  pad: 'tokenizer.ggml.padding_token_id',
  cls: 'tokenizer.ggml.cls_token_id',
  mask: 'tokenizer.ggml.mask_token_id',
} as const;

/** The tokenizer's files, parsed, with the names that errors give them. */
export interface TokenizerFiles {
  /** tokenizer.json */
  tokenizer: Record<string, unknown>;
  tokenizerFile: string;
  /** tokenizer_config.json ({} when the folder has none) */
  config: Record<string, unknown>;
  configFile: string;
  /** chat_template.jinja, used when tokenizer_config.json has no chat_template. */
  chatTemplateJinja?: string;
}

/** Tokenizer metadata entries for the GGUF of a Qwen3 model, from its parsed tokenizer files. */
export function tokenizerMetadataFromJson(files: TokenizerFiles, config: ModelConfig): [string, GgufValue][] {
  const tok = files.tokenizer;
  const tokFile = files.tokenizerFile;
  const tcfg = files.config;
  const cfgFile = files.configFile;
  const model = tok.model as Record<string, unknown> | undefined;
  if (!model || model.type !== 'BPE' || typeof model.vocab !== 'object' || model.vocab === null) {
    throw fileError(tokFile, 'is not a BPE tokenizer (model.type "BPE" with a vocab): only byte-level BPE tokenizers as Qwen3 uses are supported');
  }

  const added: AddedToken[] = Array.isArray(tok.added_tokens) ? (tok.added_tokens as AddedToken[]) : [];
  const byId = new Map<number, string>();
  for (const [token, id] of Object.entries(model.vocab as Record<string, number>)) byId.set(id, token);
  for (const a of added) byId.set(a.id, a.content);
  const addedById = new Map(added.map((a) => [a.id, a]));

  const vocabSize = config.vocabSize;
  for (const id of byId.keys()) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw fileError(tokFile, `token id ${id} is outside the model's vocab_size ${vocabSize}`);
  }
  const tokens: string[] = [];
  const types: number[] = [];
  for (let i = 0; i < vocabSize; i++) {
    const token = byId.get(i);
    const a = addedById.get(i);
    if (token === undefined) {
      tokens.push(`[PAD${i}]`);
      types.push(TokenType.UNUSED);
    } else if (a) {
      if (a.special || looksSpecial(token)) {
        tokens.push(token);
        types.push(TokenType.CONTROL);
      } else {
        tokens.push(token.replaceAll('\u2581', ' '));
        types.push(TokenType.USER_DEFINED);
      }
    } else {
      tokens.push(token);
      types.push(TokenType.NORMAL);
    }
  }

  const entries: [string, GgufValue][] = [
    ['tokenizer.ggml.model', gv.str('gpt2')],
    ['tokenizer.ggml.pre', gv.str('qwen2')],
    ['tokenizer.ggml.tokens', gv.array('string', tokens)],
    ['tokenizer.ggml.token_type', gv.array('i32', types)],
  ];
  const merges = mergeStrings(model.merges ?? [], tokFile);
  if (merges.length > 0) entries.push(['tokenizer.ggml.merges', gv.array('string', merges)]);

  // Special ids: from tokenizer_config's *_token strings matched against added tokens, then config.json's ids.
  const ids = new Map<keyof typeof SPECIAL_ID_KEYS, number>();
  for (const kind of Object.keys(SPECIAL_ID_KEYS) as (keyof typeof SPECIAL_ID_KEYS)[]) {
    const content = tokenContent(tcfg[`${kind}_token`]);
    const id = content === undefined ? undefined : added.find((a) => a.content === content)?.id;
    if (id !== undefined && id < vocabSize) ids.set(kind, id);
  }
  if (!ids.has('bos') && config.bosTokenId !== null && config.bosTokenId < vocabSize) ids.set('bos', config.bosTokenId);
  if (!ids.has('eos') && typeof config.eosTokenId === 'number' && config.eosTokenId < vocabSize) ids.set('eos', config.eosTokenId);
  for (const [kind, id] of ids) entries.push([SPECIAL_ID_KEYS[kind], gv.u32(id)]);

  // Qwen's tokenizer never prepends BOS; write that explicitly unless the config says otherwise.
  entries.push(['tokenizer.ggml.add_bos_token', gv.bool(tcfg.add_bos_token === true)]);
  if (typeof tcfg.add_eos_token === 'boolean') entries.push(['tokenizer.ggml.add_eos_token', gv.bool(tcfg.add_eos_token)]);

  const template = chatTemplate(tcfg, cfgFile, files.chatTemplateJinja);
  if (template !== undefined) entries.push(['tokenizer.chat_template', gv.str(template)]);
  return entries;
}

function chatTemplate(tcfg: Record<string, unknown>, cfgFile: string, jinja: string | undefined): string | undefined {
  const t = tcfg.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    // A list of named templates: the default one is the chat template.
    const named = t.find((x) => x && typeof x === 'object' && x.name === 'default' && typeof x.template === 'string');
    if (!named) throw fileError(cfgFile, 'chat_template is a list without a "default" template');
    return named.template as string;
  }
  return jinja;
}
