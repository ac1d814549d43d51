// Qwen3 model configuration of a model folder on disk; the parsing itself is in qwen3-config.ts (re-exported).
import { join } from 'node:path';
import { parseQwen3Config, type Qwen3Config } from './qwen3-config.js';
import { readJsonFile } from '../json-file.js';

export * from './qwen3-config.js';

/** Read `<dir>/config.json`. */
export function loadQwen3Config(dir: string): Qwen3Config {
  const file = join(dir, 'config.json');
  const json = readJsonFile(file);
  return parseQwen3Config(json, file);
}
