import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { loadDatasets, type Conversation } from '../src/train/dataset.js';

const DATA = 'test/data';
const tempDirs: string[] = [];
afterAll(() => tempDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** A temporary dataset folder with the given files. */
function folder(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'loraforge-dataset-'));
  tempDirs.push(dir);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

/** The UserError message loadDatasets throws. */
function errorOf(dataset: string, dataset_dir: string): string {
  try {
    loadDatasets({ dataset, dataset_dir });
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('expected a UserError');
}

describe('registered datasets (dataset_info.json)', () => {
  it('alpaca: instruction + "\\n" + input, system, history turns', () => {
    expect(loadDatasets({ dataset: 'alpaca_small', dataset_dir: DATA })).toEqual<Conversation[]>([
      { turns: [{ user: 'Add the numbers.\n2 and 3', assistant: '5' }] },
      { system: 'Answer in one word.', turns: [{ user: 'Name a colour.', assistant: 'Teal' }] },
      { turns: [{ user: 'What day follows Monday?', assistant: 'Tuesday' }, { user: 'And the next one?', assistant: 'Wednesday' }] },
    ]);
  });

  it('sharegpt JSONL: from/value tags, a leading system message, several turns, blank lines skipped', () => {
    expect(loadDatasets({ dataset: 'sharegpt_small', dataset_dir: DATA })).toEqual<Conversation[]>([
      { turns: [{ user: 'Hello', assistant: 'Hi there.' }] },
      { system: 'Be formal.', turns: [{ user: 'Hey', assistant: 'Good day.' }, { user: 'Bye', assistant: 'Farewell.' }] },
    ]);
  });

  it('OpenAI messages through sharegpt tags', () => {
    expect(loadDatasets({ dataset: 'openai_small', dataset_dir: DATA })).toEqual<Conversation[]>([
      { system: 'You count.', turns: [{ user: 'One?', assistant: 'Two.' }] },
    ]);
  });

  it('renamed columns and tags, system from a column', () => {
    expect(loadDatasets({ dataset: 'renamed_columns', dataset_dir: DATA })).toEqual<Conversation[]>([
      { system: 'You translate.', turns: [{ user: 'Translate to French.\ncat', assistant: 'chat' }] },
    ]);
    expect(loadDatasets({ dataset: 'renamed_tags', dataset_dir: DATA })).toEqual<Conversation[]>([
      { system: 'Support desk.', turns: [{ user: 'It broke.', assistant: 'Try restarting it.' }] },
    ]);
  });

  it('a comma list is concatenated in order; max_samples applies to each dataset', () => {
    const all = loadDatasets({ dataset: 'openai_small, alpaca_small', dataset_dir: DATA });
    expect(all.map((c) => c.turns.at(-1)!.assistant)).toEqual(['Two.', '5', 'Teal', 'Wednesday']);
    const capped = loadDatasets({ dataset: 'alpaca_small,sharegpt_small', dataset_dir: DATA, max_samples: 1 });
    expect(capped.map((c) => c.turns[0]!.assistant)).toEqual(['5', 'Hi there.']);
  });

  it('the bundled demo datasets in data/ load', () => {
    const demo = loadDatasets({ dataset: 'demo_alpaca,demo_chat', dataset_dir: 'data' });
    expect(demo.length).toBeGreaterThan(10);
    expect(demo.every((c) => c.turns.length > 0 && c.turns.every((t) => t.user !== '' && t.assistant !== ''))).toBe(true);
  });

  it('errors name the dataset_info.json problem', () => {
    expect(errorOf('from_hub', DATA)).toMatch(/dataset_info\.json: 'from_hub' is fetched with hf_hub_url/);
    expect(errorOf('nowhere', DATA)).toMatch(/dataset 'nowhere' is neither registered in test\/data\/dataset_info\.json nor a file/);
    const dir = folder({ 'dataset_info.json': '{"x": {"file_name": "x.json", "formatting": "tsv"}}', 'x.json': '[]' });
    expect(errorOf('x', dir)).toMatch(/dataset_info\.json: 'x'\.formatting must be 'alpaca' or 'sharegpt', got 'tsv'/);
    expect(errorOf('x', folder({ 'dataset_info.json': '{"x": {"file_name": "x.json"}' }))).toMatch(/dataset_info\.json: not valid JSON/);
  });
});

describe('files given by path (format detected)', () => {
  it('reads alpaca, sharegpt and OpenAI files by path, JSON lines in a .json file, and folders', () => {
    const dir = folder({
      'a.jsonl': '{"instruction": "I", "output": "O"}\n',
      'b.json': '{"conversations": [{"from": "human", "value": "U"}, {"from": "gpt", "value": "A"}]}\n',
      'c.json': '[{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}]',
      'parts/1.jsonl': '{"instruction": "first", "output": "1"}\n',
      'parts/2.json': '[{"instruction": "second", "output": "2"}]',
      'parts/notes.txt': 'not data',
    });
    const convs = loadDatasets({ dataset: `${join(dir, 'a.jsonl')},b.json,c.json,parts`, dataset_dir: dir });
    expect(convs).toEqual<Conversation[]>([
      { turns: [{ user: 'I', assistant: 'O' }] },
      { turns: [{ user: 'U', assistant: 'A' }] },
      { turns: [{ user: 'u', assistant: 'a' }] },
      { turns: [{ user: 'first', assistant: '1' }] },
      { turns: [{ user: 'second', assistant: '2' }] },
    ]);
  });

  it('an unknown record shape or file type is an error', () => {
    const dir = folder({ 'q.jsonl': '{"question": "q", "answer": "a"}\n', 'd.csv': 'a,b\n' });
    expect(errorOf('q.jsonl', dir)).toMatch(/q\.jsonl: line 1: cannot tell the format \(keys: question, answer\)/);
    expect(errorOf('d.csv', dir)).toMatch(/d\.csv: unsupported file type '\.csv'/);
  });
});

describe('malformed records are errors naming the file, the line or record, and the field', () => {
  const cases: [string, string, RegExp][] = [
    ['bad.jsonl', '{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": }\n', /bad\.jsonl: line 2: invalid JSON/],
    ['missing.jsonl', '{"instruction": "a", "output": "b"}\n\n{"instruction": "a"}\n', /missing\.jsonl: line 3: field 'output' is missing/],
    ['typed.json', '[{"instruction": "a", "output": "b"}, {"instruction": "a", "output": 7}]', /typed\.json: record 1: field 'output' must be a string, got number 7/],
    ['history.json', '[{"instruction": "a", "output": "b", "history": [["x"]]}]', /history\.json: record 0: field 'history\[0\]' must be a \[user, assistant\] pair/],
    ['notobj.json', '[{"instruction": "a", "output": "b"}, 5]', /notobj\.json: record 1: must be a JSON object, got number 5/],
    ['object.json', '[{"instruction": "a", "output": "b"}] trailing', /object\.json: invalid JSON/],
    ['roles.jsonl', '{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}\n', /roles\.jsonl: line 1: field 'conversations\[1\]\.from' must be 'gpt' or 'function_call' \(turns alternate\), got 'human'/],
    ['odd.jsonl', '{"conversations": [{"from": "human", "value": "a"}]}\n', /odd\.jsonl: line 1: field 'conversations' must end with an assistant message \('gpt' or 'function_call'\)/],
    ['tool.jsonl', '{"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "{}"}]}\n', /tool\.jsonl: line 1: field 'conversations\[1\]\.value' function call 0 must be an object with "name" and "arguments"/],
    ['value.jsonl', '{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": null}]}\n', /value\.jsonl: line 1: field 'conversations\[1\]\.value' is missing/],
    ['msgs.json', '[{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ["x"]}]}]', /msgs\.json: record 0: field 'messages\[1\]\.content' must be a string, got an array/],
    ['empty.json', '[]', /dataset 'empty\.json' has no records/],
    ['blank.jsonl', '\n\n', /dataset 'blank\.jsonl' has no records/],
  ];
  for (const [name, text, message] of cases) {
    it(name, () => {
      expect(errorOf(name, folder({ [name]: text }))).toMatch(message);
    });
  }

  it('an empty dataset list is an error', () => {
    expect(errorOf(' , ', DATA)).toMatch(/no dataset given/);
  });

  it('records past max_samples are not read', () => {
    const dir = folder({ 'late.jsonl': '{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n' });
    expect(loadDatasets({ dataset: 'late.jsonl', dataset_dir: dir, max_samples: 1 })).toHaveLength(1);
  });
});
