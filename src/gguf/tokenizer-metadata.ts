// The tokenizer metadata of an HF model folder on disk; the conversion itself is in tokenizer-gguf.ts (re-exported).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileError } from '../errors.js';
import type { Qwen3Config } from '../model/config.js';
import { tokenizerMetadataFromJson } from './tokenizer-gguf.js';
import type { GgufValue } from './writer.js';

export * from './tokenizer-gguf.js';

function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw fileError(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw fileError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw fileError(file, 'is not a JSON object');
  return json as Record<string, unknown>;
}

/**
 * Tokenizer metadata entries for the GGUF of a Qwen3 model, from `<dir>/tokenizer.json`,
 * `<dir>/tokenizer_config.json` (and `chat_template.jinja` when the config has no template).
 */
export function tokenizerMetadata(dir: string, config: Qwen3Config): [string, GgufValue][] {
  const tokenizerFile = join(dir, 'tokenizer.json');
  const configFile = join(dir, 'tokenizer_config.json');
  const jinja = join(dir, 'chat_template.jinja');
  return tokenizerMetadataFromJson({
    tokenizer: readJson(tokenizerFile),
    tokenizerFile,
    config: existsSync(configFile) ? readJson(configFile) : {},
    configFile,
    chatTemplateJinja: existsSync(jinja) ? readFileSync(jinja, 'utf8') : undefined,
  }, config);
}
