// Datasets on disk, read the way LLaMA-Factory reads them: names registered in <dataset_dir>/dataset_info.json
// (file_name, formatting, columns, tags) or plain file paths and folders. The record formats (alpaca, sharegpt,
// OpenAI) are in dataset-format.ts, re-exported from here.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, isAbsolute, join, resolve } from 'node:path';
import { UserError, fileError } from '../errors.js';
import { readJsonFile } from '../json-file.js';
import {
  DATA_EXTENSIONS, detectFormat, isObject, parseRecords, registeredFormat, REMOTE_KEYS, toConversation, toDocument, toKtoRecord, toPreferencePair,
  type Conversation, type DatasetFormat, type JsonObject, type KtoRecord, type PreferencePair, type SourcedRecord,
} from './dataset-format.js';

export * from './dataset-format.js';

export interface DatasetOptions {
  /** Comma-separated dataset names (registered in dataset_info.json) or file / folder paths. */
  dataset: string;
  dataset_dir: string;
  max_samples?: number;
}

/** Records of one .json (array, or JSON lines) or .jsonl file. */
function readRecords(file: string): SourcedRecord[] {
  const ext = extname(file).toLowerCase();
  if (!DATA_EXTENSIONS.has(ext)) throw fileError(file, `unsupported file type '${ext || '(none)'}': use .json or .jsonl`);
  return parseRecords(readFileSync(file, 'utf8'), file);
}

/** A file, or every .json/.jsonl file of a folder in name order (LLaMA-Factory loads folders too). */
function readPath(path: string): SourcedRecord[] {
  if (!statSync(path).isDirectory()) return readRecords(path);
  const files = readdirSync(path)
    .filter((f) => DATA_EXTENSIONS.has(extname(f).toLowerCase()))
    .sort();
  if (files.length === 0) throw fileError(path, 'folder holds no .json or .jsonl files');
  return files.flatMap((f) => readRecords(join(path, f)));
}

function readRegistry(datasetDir: string): { file: string; entries: JsonObject } | undefined {
  const file = join(datasetDir, 'dataset_info.json');
  if (!existsSync(file)) return undefined;
  const parsed = readJsonFile(file);
  if (!isObject(parsed)) throw fileError(file, 'expected an object of dataset entries');
  return { file, entries: parsed };
}

/** The records of one named dataset and how to read them. */
function resolveDataset(name: string, datasetDir: string, registry: ReturnType<typeof readRegistry>, ranking = false): { records: SourcedRecord[]; format?: DatasetFormat } {
  const entry = registry?.entries[name];
  if (registry && entry !== undefined) {
    if (!isObject(entry)) throw fileError(registry.file, `'${name}' must be an object`);
    const fileName = entry.file_name;
    if (typeof fileName !== 'string') {
      const remote = REMOTE_KEYS.find((k) => k in entry);
      throw fileError(
        registry.file,
        remote ? `'${name}' is fetched with ${remote}, which is not supported here: download it and set file_name` : `'${name}' has no file_name`,
      );
    }
    const path = isAbsolute(fileName) ? fileName : join(datasetDir, fileName);
    if (!existsSync(path)) throw fileError(registry.file, `'${name}': file_name ${path} does not exist`);
    const format = registeredFormat(registry.file, name, entry);
    if (format.ranking && !ranking) throw fileError(registry.file, `'${name}': a ranking (preference) dataset is for stage dpo`);
    if (ranking && !format.ranking) throw fileError(registry.file, `'${name}': stage dpo needs a ranking dataset ("ranking": true, with chosen and rejected columns)`);
    return { records: readPath(path), format };
  }
  for (const path of [name, join(datasetDir, name)]) {
    if (existsSync(path)) return { records: readPath(path) };
  }
  const registered = registry ? `registered in ${registry.file}` : `registered (no ${join(datasetDir, 'dataset_info.json')})`;
  throw new UserError(`dataset '${name}' is neither ${registered} nor a file (looked in ${resolve('.')} and ${resolve(datasetDir)})`);
}

/** The records of the comma-separated datasets converted by `convert`, concatenated in order. */
function loadConverted<T>(cfg: DatasetOptions, convert: (r: SourcedRecord, format: DatasetFormat) => T, text: boolean, ranking = false): T[] {
  const names = cfg.dataset.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (names.length === 0) throw new UserError('dataset: no dataset given');
  const registry = readRegistry(cfg.dataset_dir);
  const out: T[] = [];
  for (const name of names) {
    const { records, format } = resolveDataset(name, cfg.dataset_dir, registry, ranking);
    if (records.length === 0) throw new UserError(`dataset '${name}' has no records`);
    const kept = cfg.max_samples === undefined ? records : records.slice(0, cfg.max_samples);
    const recordFormat = format ?? detectFormat(kept[0]!, text);
    for (const r of kept) out.push(convert(r, recordFormat));
  }
  if (out.length === 0) throw new UserError(`dataset '${cfg.dataset}' has no samples (max_samples ${cfg.max_samples})`);
  return out;
}

/** All conversations of the comma-separated datasets, concatenated in order. */
export function loadDatasets(cfg: DatasetOptions): Conversation[] {
  return loadConverted(cfg, toConversation, false);
}

/** All documents (stage pt) of the comma-separated datasets, concatenated in order. */
export function loadDocuments(cfg: DatasetOptions): string[] {
  return loadConverted(cfg, toDocument, true);
}

/** stage dpo: the pairs of ranking datasets (registered with "ranking": true, or files with chosen / rejected). */
export function loadPreferencePairs(cfg: DatasetOptions): PreferencePair[] {
  return loadConverted(cfg, toPreferencePair, false, true);
}

/** stage kto: the labelled conversations of datasets whose columns map kto_tag. */
export function loadKtoRecords(cfg: DatasetOptions): KtoRecord[] {
  return loadConverted(cfg, toKtoRecord, false);
}
