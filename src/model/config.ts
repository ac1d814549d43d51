// Qwen3 model configuration of a model folder on disk; the parsing itself is in qwen3-config.ts (re-exported).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileError } from '../errors.js';
import { parseQwen3Config, type Qwen3Config } from './qwen3-config.js';

export * from './qwen3-config.js';

/** Read `<dir>/config.json`. */
export function loadQwen3Config(dir: string): Qwen3Config {
  const file = join(dir, 'config.json');
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
  return parseQwen3Config(json, file);
}
