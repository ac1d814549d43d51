// A tokenizer from parsed tokenizer.json + tokenizer_config.json through @lenml/tokenizers, with the chat template
// rendered by @huggingface/jinja (lenml's own renderer fails on Qwen3's template). No Node API here (the browser
// demo uses it); tokenizer.ts adds loading a model folder and the bundled Qwen3 tokenizer.
import { Template } from '@huggingface/jinja';
import { TokenizerLoader } from '@lenml/tokenizers';
import { fileError, UserError } from '../errors.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export type LenmlTokenizer = ReturnType<typeof TokenizerLoader.fromPreTrained>;

/** The lenml tokenizer of parsed files, or a UserError naming `source`. */
export function buildLenml(json: any, config: any, source: string): LenmlTokenizer {
  try {
    return TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: config });
  } catch (e) {
    throw fileError(source, `cannot build a tokenizer from it (${(e as Error).message})`);
  }
}

/** A special token in tokenizer_config.json is a string or an AddedToken object. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

export class JsonTokenizer {
  readonly eosTokenId: number;
  /** Number of token ids (largest id + 1), which may be below the model's embedding rows. */
  readonly vocabSize: number;
  readonly chatTemplate: string | undefined;
  private compiledTemplate: Template | undefined;

  protected constructor(
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

  /** A tokenizer from parsed tokenizer.json and tokenizer_config.json; `source` names them in errors. */
  static fromJson(json: any, config: any, source = 'tokenizer.json'): JsonTokenizer {
    return new JsonTokenizer(json, config, buildLenml(json, config, source), source);
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
