// Dataset records read the way LLaMA-Factory reads them: JSON arrays or JSON lines, in alpaca or sharegpt form.
//
// Facts followed (LLaMA-Factory data/parser.py, converter.py, loader.py):
// - alpaca: user = instruction + "\n" + input (empty parts left out), answer = output, optional system and
//   history [[user, answer], ...] turns before it. Default columns instruction/input/output/system/history.
// - sharegpt: a message list (column "conversations" by default) with role_tag "from", content_tag "value",
//   user_tag "human", assistant_tag "gpt", system_tag "system"; a leading system message is the system prompt,
//   otherwise the system column. The OpenAI form is sharegpt with column "messages" and tags role/content/
//   user/assistant/system. Turns must alternate user, assistant and end with an assistant message.
// - tool use: in the user's place an observation message (observation_tag "observation", OpenAI "tool"), in the
//   assistant's a function call (function_tag "function_call"); the tools column (only where dataset_info.json
//   maps it, e.g. glaive_toolcall_en_demo's "tools") holds the JSON list of tools. tool-format.ts renders them.
// - max_samples keeps the first N records of each dataset; datasets are concatenated in the order given.
// LLaMA-Factory skips malformed records with a warning; here they are errors naming the file, the record and the
// field, so that a broken dataset never trains silently on less than expected.
// No Node API here (the browser demo parses dropped files with it); dataset.ts adds files, folders and
// dataset_info.json on disk.
import { UserError, fileError } from '../errors.js';
import { functionCallText, toolsPrompt, ToolFormatError } from './tool-format.js';

/** A prompt and its answer. Tool use: the prompt may be a tool's result, the answer a function call. */
export interface Turn {
  user: string;
  assistant: string;
  /** The user part is an observation (a tool's result: sharegpt's observation_tag). */
  observation?: boolean;
  /** The answer is a function call, JSON (sharegpt's function_tag): rendered as <tool_call> blocks, trained. */
  toolCall?: boolean;
}

export interface Conversation {
  system?: string;
  /** The tools column: a JSON list of the tools offered (non-empty text only). */
  tools?: string;
  turns: Turn[];
}

interface AlpacaColumns {
  prompt: string;
  query: string;
  response: string;
  system: string;
  history: string;
  /** Ranking datasets: the preferred and the dispreferred answer (strings). */
  chosen: string;
  rejected: string;
  /** KTO: the column with the record's boolean label (desirable answer or not); only where mapped. */
  kto_tag?: string;
  /** The JSON list of tools offered (a string); only where mapped. */
  tools?: string;
}

interface SharegptColumns {
  messages: string;
  system: string;
  /** Ranking datasets: one assistant message each; the messages column then ends with the user's turn. */
  chosen: string;
  rejected: string;
  kto_tag?: string;
  tools?: string;
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

/** `ranking`: dataset_info.json's `ranking: true` (preference pairs, read with toPreferencePair). */
export type DatasetFormat =
  | { formatting: 'alpaca'; columns: AlpacaColumns; ranking?: boolean }
  | { formatting: 'sharegpt'; columns: SharegptColumns; tags: SharegptTags; ranking?: boolean };

const ALPACA_COLUMNS: AlpacaColumns = { prompt: 'instruction', query: 'input', response: 'output', system: 'system', history: 'history', chosen: 'chosen', rejected: 'rejected' };
const SHAREGPT_COLUMNS: SharegptColumns = { messages: 'conversations', system: 'system', chosen: 'chosen', rejected: 'rejected' };
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
export const REMOTE_KEYS = ['hf_hub_url', 'ms_hub_url', 'om_hub_url', 'script_url', 'cloud_file_name'];
export const DATA_EXTENSIONS = new Set(['.json', '.jsonl']);

export type JsonObject = Record<string, unknown>;

/** One record with where it came from, for error messages. */
export interface SourcedRecord {
  file: string;
  where: string;
  value: unknown;
}

export const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

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

/** The record's tools column where mapped: a JSON list that tool-format.ts can render; empty text is none. */
function toolsOf(r: SourcedRecord, obj: JsonObject, column: string | undefined): string | undefined {
  if (column === undefined) return undefined;
  const v = obj[column];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw recordError(r, column, `must be a string holding a JSON list of tools, got ${describe(v)}`);
  try {
    toolsPrompt(v);
  } catch (e) {
    if (e instanceof ToolFormatError) throw recordError(r, column, e.message);
    throw e;
  }
  return v;
}

/** A conversation with its optional parts set only when present. */
function conversation(system: string | undefined, tools: string | undefined, turns: Turn[]): Conversation {
  return { ...(system ? { system } : {}), ...(tools ? { tools } : {}), turns };
}

/** `response`: the answer of the last turn (the output column, or a ranking record's chosen / rejected column). */
function alpacaConversation(r: SourcedRecord, obj: JsonObject, c: AlpacaColumns, response = c.response): Conversation {
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
  turns.push({ user, assistant: requiredString(r, obj, response) });
  return conversation(optionalString(r, obj, c.system), toolsOf(r, obj, c.tools), turns);
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
    for (const [m, expected] of [[user, [t.user_tag, t.observation_tag]], [assistant, [t.assistant_tag, t.function_tag]]] as const) {
      if (m === undefined) throw recordError(r, c.messages, `must end with an assistant message ('${t.assistant_tag}' or '${t.function_tag}')`);
      if (!expected.includes(m.role)) throw recordError(r, `${m.path}.${t.role_tag}`, `must be '${expected[0]}' or '${expected[1]}' (turns alternate), got '${m.role}'`);
    }
    const turn: Turn = { user: user.content, assistant: assistant!.content };
    if (user.role === t.observation_tag) turn.observation = true;
    if (assistant!.role === t.function_tag) {
      turn.toolCall = true;
      try {
        functionCallText(turn.assistant);
      } catch (e) {
        if (e instanceof ToolFormatError) throw recordError(r, `${assistant!.path}.${t.content_tag}`, e.message);
        throw e;
      }
    }
    turns.push(turn);
  }
  if (turns.length === 0) throw recordError(r, c.messages, 'has no user/assistant turns');
  return conversation(system, toolsOf(r, obj, c.tools), turns);
}

export function toConversation(r: SourcedRecord, format: DatasetFormat): Conversation {
  if (!isObject(r.value)) throw fileError(r.file, `${r.where}: must be a JSON object, got ${describe(r.value)}`);
  return format.formatting === 'alpaca'
    ? alpacaConversation(r, r.value, format.columns)
    : sharegptConversation(r, r.value, format.columns, format.tags);
}

/**
 * A document of continued pretraining (stage pt), as LLaMA-Factory takes the first prompt message: alpaca, the
 * prompt column (and "\n" + the query column when set; c4_demo maps prompt to its "text" column); sharegpt, the
 * first message after a system message.
 */
export function toDocument(r: SourcedRecord, format: DatasetFormat): string {
  if (!isObject(r.value)) throw fileError(r.file, `${r.where}: must be a JSON object, got ${describe(r.value)}`);
  const obj = r.value;
  if (format.formatting === 'alpaca') {
    const c = format.columns;
    const text = optionalString(r, obj, c.prompt);
    if (text === undefined) throw recordError(r, c.prompt, 'is missing');
    const query = optionalString(r, obj, c.query);
    return query ? `${text}\n${query}` : text;
  }
  const { columns: c, tags: t } = format;
  const messages = obj[c.messages];
  if (!Array.isArray(messages)) throw recordError(r, c.messages, messages === undefined ? 'is missing' : `must be a list of messages, got ${describe(messages)}`);
  const first = messages.length > 0 && isObject(messages[0]) && messages[0][t.role_tag] === t.system_tag ? 1 : 0;
  if (first >= messages.length) throw recordError(r, c.messages, first ? 'has no message besides the system prompt' : 'is empty');
  const m = messages[first];
  if (!isObject(m)) throw recordError(r, `${c.messages}[${first}]`, `must be an object, got ${describe(m)}`);
  return requiredString(r, m, t.content_tag, `${c.messages}[${first}].${t.content_tag}`);
}

/** A preference record: the same prompt answered with the chosen and with the rejected answer. */
export interface PreferencePair {
  chosen: Conversation;
  rejected: Conversation;
}

/**
 * A ranking record as LLaMA-Factory reads it. alpaca: the prompt columns, and the answers in the chosen and
 * rejected columns (strings). sharegpt: the messages column ends with the user's turn; chosen and rejected are
 * one assistant message each.
 */
export function toPreferencePair(r: SourcedRecord, format: DatasetFormat): PreferencePair {
  if (!isObject(r.value)) throw fileError(r.file, `${r.where}: must be a JSON object, got ${describe(r.value)}`);
  const obj = r.value;
  if (format.formatting === 'alpaca') {
    const c = format.columns;
    return { chosen: alpacaConversation(r, obj, c, c.chosen), rejected: alpacaConversation(r, obj, c, c.rejected) };
  }
  const { columns: c, tags: t } = format;
  const prompt = obj[c.messages];
  if (!Array.isArray(prompt)) return { chosen: sharegptConversation(r, obj, c, t), rejected: sharegptConversation(r, obj, c, t) };
  const withSystem = prompt.length > 0 && isObject(prompt[0]) && prompt[0][t.role_tag] === t.system_tag ? 1 : 0;
  if ((prompt.length - withSystem) % 2 !== 1) throw recordError(r, c.messages, `must end with a user message ('${t.user_tag}'): the answers are in '${c.chosen}' and '${c.rejected}'`);
  const answered = (column: string): Conversation => {
    const m = obj[column];
    if (m === undefined || m === null) throw recordError(r, column, 'is missing');
    if (!isObject(m)) throw recordError(r, column, `must be one message object, got ${describe(m)}`);
    const role = requiredString(r, m, t.role_tag, `${column}.${t.role_tag}`);
    if (role !== t.assistant_tag) throw recordError(r, `${column}.${t.role_tag}`, `must be '${t.assistant_tag}', got '${role}'`);
    requiredString(r, m, t.content_tag, `${column}.${t.content_tag}`);
    return sharegptConversation(r, { ...obj, [c.messages]: [...prompt, m] }, c, t);
  };
  return { chosen: answered(c.chosen), rejected: answered(c.rejected) };
}

/** A KTO record: an SFT conversation and whether its (last) answer is desirable. */
export interface KtoRecord {
  conversation: Conversation;
  desirable: boolean;
}

/** A record of a dataset whose columns map kto_tag (LLaMA-Factory's KTO data): the conversation and its label. */
export function toKtoRecord(r: SourcedRecord, format: DatasetFormat): KtoRecord {
  const tag = format.columns.kto_tag;
  if (tag === undefined) throw fileError(r.file, `${r.where}: the dataset maps no kto_tag column (columns: {"kto_tag": ...} in dataset_info.json)`);
  const conversation = toConversation(r, format);
  const label = (r.value as JsonObject)[tag];
  if (typeof label !== 'boolean') throw recordError(r, tag, label === undefined ? 'is missing' : `must be true or false, got ${describe(label)}`);
  return { conversation, desirable: label };
}

function stringMap(file: string, where: string, v: unknown): Record<string, string> {
  if (v === undefined) return {};
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw fileError(file, `${where} must be an object of strings`);
  }
  return v as Record<string, string>;
}

/** The format of a dataset_info.json entry. */
export function registeredFormat(infoFile: string, name: string, entry: JsonObject): DatasetFormat {
  const formatting = entry.formatting ?? 'alpaca';
  const columns = stringMap(infoFile, `'${name}'.columns`, entry.columns);
  const tags = stringMap(infoFile, `'${name}'.tags`, entry.tags);
  const ranking = entry.ranking === true;
  if (formatting === 'alpaca') return { formatting, columns: { ...ALPACA_COLUMNS, ...columns }, ranking };
  if (formatting === 'sharegpt') return { formatting, columns: { ...SHAREGPT_COLUMNS, ...columns }, tags: { ...SHAREGPT_TAGS, ...tags }, ranking };
  if (formatting === 'openai') {
    return { formatting: 'sharegpt', columns: { ...SHAREGPT_COLUMNS, messages: 'messages', ...columns }, tags: { ...OPENAI_TAGS, ...tags }, ranking };
  }
  throw fileError(infoFile, `'${name}'.formatting must be 'alpaca' or 'sharegpt', got ${describe(formatting)}`);
}

/**
 * The format of an unregistered file, from its first record's keys. `text`: a file of documents (stage pt), where a
 * "text" column is the document (as c4_demo's dataset_info.json entry maps it).
 */
export function detectFormat(r: SourcedRecord, text = false): DatasetFormat {
  if (!isObject(r.value)) throw fileError(r.file, `${r.where}: must be a JSON object, got ${describe(r.value)}`);
  const obj = r.value;
  if (text && typeof obj.text === 'string') return { formatting: 'alpaca', columns: { ...ALPACA_COLUMNS, prompt: 'text' } };
  for (const column of ['messages', 'conversations']) {
    const messages = obj[column];
    if (Array.isArray(messages)) {
      const first = messages[0];
      const openai = isObject(first) && 'role' in first;
      const tools = 'tools' in obj ? { tools: 'tools' } : {};
      return { formatting: 'sharegpt', columns: { ...SHAREGPT_COLUMNS, messages: column, ...tools }, tags: openai ? OPENAI_TAGS : SHAREGPT_TAGS };
    }
  }
  if ('instruction' in obj || 'output' in obj) return { formatting: 'alpaca', columns: ALPACA_COLUMNS };
  throw fileError(
    r.file,
    `${r.where}: cannot tell the format (keys: ${Object.keys(obj).join(', ') || 'none'}): expected alpaca (instruction, input, output), ` +
      `sharegpt (conversations) or OpenAI messages${text ? ', or a text column' : typeof obj.text === 'string' ? ' (a text column is read by stage pt)' : ''}; or register the file in dataset_info.json`,
  );
}

/** Records of a JSON array or JSON lines text (HF datasets' json loader reads both, whatever the extension). */
export function parseRecords(text: string, file: string): SourcedRecord[] {
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

/** The conversations of one dataset file's text (alpaca, sharegpt or OpenAI messages, told from the first record). */
export function conversationsFromText(text: string, file: string): Conversation[] {
  const records = parseRecords(text, file);
  if (records.length === 0) throw fileError(file, 'has no records');
  const format = detectFormat(records[0]!);
  return records.map((r) => toConversation(r, format));
}
