// Datasets read the way LLaMA-Factory reads them: names registered in <dataset_dir>/dataset_info.json (file_name,
// formatting, columns, tags) or plain file paths, JSON arrays or JSON lines, in alpaca or sharegpt form.
//
// Facts followed (LLaMA-Factory data/parser.py, converter.py, loader.py):
// - alpaca: user = instruction + "\n" + input (empty parts left out), answer = output, optional system and
//   history [[user, answer], ...] turns before it. Default columns instruction/input/output/system/history.
// - sharegpt: a message list (column "conversations" by default) with role_tag "from", content_tag "value",
//   user_tag "human", assistant_tag "gpt", system_tag "system"; a leading system message is the system prompt,
//   otherwise the system column. The OpenAI form is sharegpt with column "messages" and tags role/content/
//   user/assistant/system. Turns must alternate user, assistant and end with an assistant message.
// - max_samples keeps the first N records of each dataset; datasets are concatenated in the order given.
// LLaMA-Factory skips malformed records with a warning; here they are errors naming the file, the record and the
// field, so that a broken dataset never trains silently on less than expected.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, isAbsolute, join, resolve } from 'node:path';
import { UserError, fileError } from '../errors.js';

export interface Turn {
  user: string;
  assistant: string;
}

export interface Conversation {
  system?: string;
  turns: Turn[];
}

export interface DatasetOptions {
  /** Comma-separated dataset names (registered in dataset_info.json) or file / folder paths. */
  dataset: string;
  dataset_dir: string;
  max_samples?: number;
}

interface AlpacaColumns {
  prompt: string;
  query: string;
  response: string;
  system: string;
  history: string;
}

interface SharegptColumns {
  messages: string;
  system: string;
}

interface SharegptTags {
  role_tag: string;
  content_tag: string;
  user_tag: string;
  assistant_tag: string;
  system_tag: string;
  observation_tag: string;
  function_tag: string;
}

type DatasetFormat =
  | { formatting: 'alpaca'; columns: AlpacaColumns }
  | { formatting: 'sharegpt'; columns: SharegptColumns; tags: SharegptTags };

const ALPACA_COLUMNS: AlpacaColumns = { prompt: 'instruction', query: 'input', response: 'output', system: 'system', history: 'history' };
const SHAREGPT_COLUMNS: SharegptColumns = { messages: 'conversations', system: 'system' };
const SHAREGPT_TAGS: SharegptTags = {
  role_tag: 'from',
  content_tag: 'value',
  user_tag: 'human',
  assistant_tag: 'gpt',
  system_tag: 'system',
  observation_tag: 'observation',
  function_tag: 'function_call',
};
const OPENAI_TAGS: SharegptTags = {
  role_tag: 'role',
  content_tag: 'content',
  user_tag: 'user',
  assistant_tag: 'assistant',
  system_tag: 'system',
  observation_tag: 'tool',
  function_tag: 'function_call',
};

/** Keys of a dataset_info.json entry that fetch data from elsewhere: not available here. */
const REMOTE_KEYS = ['hf_hub_url', 'ms_hub_url', 'om_hub_url', 'script_url', 'cloud_file_name'];
const DATA_EXTENSIONS = new Set(['.json', '.jsonl']);

type JsonObject = Record<string, unknown>;

/** One record with where it came from, for error messages. */
interface SourcedRecord {
  file: string;
  where: string;
  value: unknown;
}

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `'${v.length > 40 ? `${v.slice(0, 40)}...` : v}'`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

function recordError(r: SourcedRecord, field: string, problem: string): UserError {
  return fileError(r.file, `${r.where}: field '${field}' ${problem}`);
}

/** A string field that may be absent (or null); present, it must be a string. */
function optionalString(r: SourcedRecord, obj: JsonObject, field: string, path = field): string | undefined {
  const v = obj[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw recordError(r, path, `must be a string, got ${describe(v)}`);
  return v;
}

function requiredString(r: SourcedRecord, obj: JsonObject, field: string, path = field): string {
  const v = optionalString(r, obj, field, path);
  if (v === undefined) throw recordError(r, path, 'is missing');
  return v;
}

function alpacaConversation(r: SourcedRecord, obj: JsonObject, c: AlpacaColumns): Conversation {
  const turns: Turn[] = [];
  const history = obj[c.history];
  if (history !== undefined && history !== null) {
    if (!Array.isArray(history)) throw recordError(r, c.history, `must be a list of [user, assistant] pairs, got ${describe(history)}`);
    history.forEach((pair, i) => {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
        throw recordError(r, `${c.history}[${i}]`, `must be a [user, assistant] pair of strings, got ${describe(pair)}`);
      }
      turns.push({ user: pair[0], assistant: pair[1] });
    });
  }
  const instruction = optionalString(r, obj, c.prompt);
  const input = optionalString(r, obj, c.query);
  if (instruction === undefined && input === undefined) throw recordError(r, c.prompt, 'is missing');
  const user = [instruction, input].filter((s) => s).join('\n');
  turns.push({ user, assistant: requiredString(r, obj, c.response) });
  const system = optionalString(r, obj, c.system);
  return system ? { system, turns } : { turns };
}

function sharegptConversation(r: SourcedRecord, obj: JsonObject, c: SharegptColumns, t: SharegptTags): Conversation {
  const messages = obj[c.messages];
  if (messages === undefined) throw recordError(r, c.messages, 'is missing');
  if (!Array.isArray(messages)) throw recordError(r, c.messages, `must be a list of messages, got ${describe(messages)}`);
  const parsed = messages.map((m, i) => {
    const path = `${c.messages}[${i}]`;
    if (!isObject(m)) throw recordError(r, path, `must be an object, got ${describe(m)}`);
    return { path, role: requiredString(r, m, t.role_tag, `${path}.${t.role_tag}`), content: requiredString(r, m, t.content_tag, `${path}.${t.content_tag}`) };
  });
  let system = optionalString(r, obj, c.system);
  let start = 0;
  if (parsed.length > 0 && parsed[0]!.role === t.system_tag) {
    system = parsed[0]!.content;
    start = 1;
  }
  const turns: Turn[] = [];
  for (let i = start; i < parsed.length; i += 2) {
    const user = parsed[i]!;
    const assistant = parsed[i + 1];
    for (const [m, expected] of [[user, t.user_tag], [assistant, t.assistant_tag]] as const) {
      if (m === undefined) throw recordError(r, c.messages, `must end with an assistant message ('${t.assistant_tag}')`);
      if (m.role === t.observation_tag || m.role === t.function_tag) {
        throw recordError(r, `${m.path}.${t.role_tag}`, `is '${m.role}': tool-call turns are not supported`);
      }
      if (m.role !== expected) throw recordError(r, `${m.path}.${t.role_tag}`, `must be '${expected}' (turns alternate), got '${m.role}'`);
    }
    turns.push({ user: user.content, assistant: assistant!.content });
  }
  if (turns.length === 0) throw recordError(r, c.messages, 'has no user/assistant turns');
  return system ? { system, turns } : { turns };
}

function toConversation(r: SourcedRecord, format: DatasetFormat): Conversation {
  if (!isObject(r.value)) throw fileError(r.file, `${r.where}: must be a JSON object, got ${describe(r.value)}`);
  return format.formatting === 'alpaca'
    ? alpacaConversation(r, r.value, format.columns)
    : sharegptConversation(r, r.value, format.columns, format.tags);
}

/** Records of one .json (array, or JSON lines) or .jsonl file. */
function readRecords(file: string): SourcedRecord[] {
  const ext = extname(file).toLowerCase();
  if (!DATA_EXTENSIONS.has(ext)) throw fileError(file, `unsupported file type '${ext || '(none)'}': use .json or .jsonl`);
  const text = readFileSync(file, 'utf8');
  // HF datasets' json loader reads both forms whatever the extension: an array, or one object per line.
  if (text.trimStart().startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw fileError(file, `invalid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(parsed)) throw fileError(file, 'expected a JSON array of records');
    return parsed.map((value, i) => ({ file, where: `record ${i}`, value }));
  }
  const records: SourcedRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw fileError(file, `line ${i + 1}: invalid JSON: ${(e as Error).message}`);
    }
    records.push({ file, where: `line ${i + 1}`, value });
  });
  return records;
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

function stringMap(file: string, where: string, v: unknown): Record<string, string> {
  if (v === undefined) return {};
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw fileError(file, `${where} must be an object of strings`);
  }
  return v as Record<string, string>;
}

/** The format of a dataset_info.json entry. */
function registeredFormat(infoFile: string, name: string, entry: JsonObject): DatasetFormat {
  const formatting = entry.formatting ?? 'alpaca';
  const columns = stringMap(infoFile, `'${name}'.columns`, entry.columns);
  const tags = stringMap(infoFile, `'${name}'.tags`, entry.tags);
  if (entry.ranking === true) throw fileError(infoFile, `'${name}': ranking (preference) datasets are not supported for SFT`);
  if (formatting === 'alpaca') return { formatting, columns: { ...ALPACA_COLUMNS, ...columns } };
  if (formatting === 'sharegpt') return { formatting, columns: { ...SHAREGPT_COLUMNS, ...columns }, tags: { ...SHAREGPT_TAGS, ...tags } };
  if (formatting === 'openai') {
    return { formatting: 'sharegpt', columns: { ...SHAREGPT_COLUMNS, messages: 'messages', ...columns }, tags: { ...OPENAI_TAGS, ...tags } };
  }
  throw fileError(infoFile, `'${name}'.formatting must be 'alpaca' or 'sharegpt', got ${describe(formatting)}`);
}

/** The format of an unregistered file, from its first record's keys. */
function detectFormat(r: SourcedRecord): DatasetFormat {
  if (!isObject(r.value)) throw fileError(r.file, `${r.where}: must be a JSON object, got ${describe(r.value)}`);
  const obj = r.value;
  for (const column of ['messages', 'conversations']) {
    const messages = obj[column];
    if (Array.isArray(messages)) {
      const first = messages[0];
      const openai = isObject(first) && 'role' in first;
      return { formatting: 'sharegpt', columns: { ...SHAREGPT_COLUMNS, messages: column }, tags: openai ? OPENAI_TAGS : SHAREGPT_TAGS };
    }
  }
  if ('instruction' in obj || 'output' in obj) return { formatting: 'alpaca', columns: ALPACA_COLUMNS };
  throw fileError(
    r.file,
    `${r.where}: cannot tell the format (keys: ${Object.keys(obj).join(', ') || 'none'}): expected alpaca (instruction, input, output), ` +
      "sharegpt (conversations) or OpenAI messages; or register the file in dataset_info.json",
  );
}

function readRegistry(datasetDir: string): { file: string; entries: JsonObject } | undefined {
  const file = join(datasetDir, 'dataset_info.json');
  if (!existsSync(file)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw fileError(file, `invalid JSON: ${(e as Error).message}`);
  }
  if (!isObject(parsed)) throw fileError(file, 'expected an object of dataset entries');
  return { file, entries: parsed };
}

/** The records of one named dataset and how to read them. */
function resolveDataset(name: string, datasetDir: string, registry: ReturnType<typeof readRegistry>): { records: SourcedRecord[]; format?: DatasetFormat } {
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
    return { records: readPath(path), format: registeredFormat(registry.file, name, entry) };
  }
  for (const path of [name, join(datasetDir, name)]) {
    if (existsSync(path)) return { records: readPath(path) };
  }
  const registered = registry ? `registered in ${registry.file}` : `registered (no ${join(datasetDir, 'dataset_info.json')})`;
  throw new UserError(`dataset '${name}' is neither ${registered} nor a file (looked in ${resolve('.')} and ${resolve(datasetDir)})`);
}

/** All conversations of the comma-separated datasets, concatenated in order. */
export function loadDatasets(cfg: DatasetOptions): Conversation[] {
  const names = cfg.dataset.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (names.length === 0) throw new UserError('dataset: no dataset given');
  const registry = readRegistry(cfg.dataset_dir);
  const conversations: Conversation[] = [];
  for (const name of names) {
    const { records, format } = resolveDataset(name, cfg.dataset_dir, registry);
    if (records.length === 0) throw new UserError(`dataset '${name}' has no records`);
    const kept = cfg.max_samples === undefined ? records : records.slice(0, cfg.max_samples);
    const recordFormat = format ?? detectFormat(kept[0]!);
    for (const r of kept) conversations.push(toConversation(r, recordFormat));
  }
  if (conversations.length === 0) throw new UserError(`dataset '${cfg.dataset}' has no samples (max_samples ${cfg.max_samples})`);
  return conversations;
}
