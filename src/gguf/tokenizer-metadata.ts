// The tokenizer metadata of an HF model folder on disk; the conversion itself is in tokenizer-gguf.ts (re-exported).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../model/config.js';
import { tokenizerMetadataFromJson } from './tokenizer-gguf.js';
import type { GgufValue } from './writer.js';
import { readJsonObject } from '../json-file.js';

export * from './tokenizer-gguf.js';

/**
 * Tokenizer metadata entries for the GGUF of a Qwen3 model, from `<dir>/tokenizer.json`,
 * `<dir>/tokenizer_config.json` (and `chat_template.jinja` when the config has no template).
 */
export function tokenizerMetadata(dir: string, config: ModelConfig): [string, GgufValue][] {
  const tokenizerFile = join(dir, 'tokenizer.json');
  const configFile = join(dir, 'tokenizer_config.json');
  const jinja = join(dir, 'chat_template.jinja');
  return tokenizerMetadataFromJson({
    tokenizer: readJsonObject(tokenizerFile),
    tokenizerFile,
    config: existsSync(configFile) ? readJsonObject(configFile) : {},
    configFile,
    chatTemplateJinja: existsSync(jinja) ? readFileSync(jinja, 'utf8') : undefined,
  }, config);
}
