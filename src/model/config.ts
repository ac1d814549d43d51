// Model configuration of a model folder on disk; the parsing itself is in model-config.ts (re-exported).
import { join } from 'node:path';
import { parseModelConfig, type ModelConfig } from './model-config.js';
import { readJsonFile } from '../json-file.js';

export * from './model-config.js';

/** Read `<dir>/config.json`. */
export function loadModelConfig(dir: string): ModelConfig {
  const file = join(dir, 'config.json');
  const json = readJsonFile(file);
  return parseModelConfig(json, file);
}
