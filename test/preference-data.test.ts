// Ranking (preference) records read as LLaMA-Factory reads them: alpaca with chosen/rejected columns, sharegpt
// whose messages end with the user's turn and chosen/rejected assistant messages; errors name the record and field; KTO records with their kto_tag label.
import { describe, expect, it } from 'vitest';
import { registeredFormat, toKtoRecord, toPreferencePair, type SourcedRecord } from '../src/train/dataset-format.js';

const rec = (value: unknown): SourcedRecord => ({ file: 'data/pairs.json', where: 'record 0', value });
const errorOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  return 'no error';
};

describe('ranking datasets', () => {
  it('alpaca: the prompt columns, answered by chosen and by rejected', () => {
    const format = registeredFormat('dataset_info.json', 'pairs', { file_name: 'pairs.json', ranking: true, columns: { prompt: 'instruction', query: 'input', chosen: 'chosen', rejected: 'rejected' } });
    expect(format.ranking).toBe(true);
    const pair = toPreferencePair(rec({ instruction: 'Add', input: '2 and 3', chosen: '5', rejected: '6', system: 'Be brief.' }), format);
    expect(pair.chosen).toEqual({ system: 'Be brief.', turns: [{ user: 'Add\n2 and 3', assistant: '5' }] });
    expect(pair.rejected).toEqual({ system: 'Be brief.', turns: [{ user: 'Add\n2 and 3', assistant: '6' }] });
    expect(errorOf(() => toPreferencePair(rec({ instruction: 'Add', chosen: '5' }), format))).toBe("data/pairs.json: record 0: field 'rejected' is missing");
  });

  it("sharegpt (dpo_en_demo's form): messages end with the user; chosen and rejected are assistant messages", () => {
    const format = registeredFormat('dataset_info.json', 'dpo', {
      file_name: 'dpo.json', formatting: 'sharegpt', ranking: true, columns: { messages: 'conversations', chosen: 'chosen', rejected: 'rejected' },
    });
    const value = {
      conversations: [{ from: 'system', value: 'S' }, { from: 'human', value: 'hi' }, { from: 'gpt', value: 'hello' }, { from: 'human', value: '2+2?' }],
      chosen: { from: 'gpt', value: '4' },
      rejected: { from: 'gpt', value: '5' },
    };
    const pair = toPreferencePair(rec(value), format);
    expect(pair.chosen).toEqual({ system: 'S', turns: [{ user: 'hi', assistant: 'hello' }, { user: '2+2?', assistant: '4' }] });
    expect(pair.rejected.turns.at(-1)).toEqual({ user: '2+2?', assistant: '5' });
    expect(errorOf(() => toPreferencePair(rec({ ...value, rejected: { from: 'human', value: '5' } }), format))).toBe("data/pairs.json: record 0: field 'rejected.from' must be 'gpt', got 'human'");
    expect(errorOf(() => toPreferencePair(rec({ ...value, conversations: value.conversations.slice(0, 3) }), format)))
      .toBe("data/pairs.json: record 0: field 'conversations' must end with a user message ('human'): the answers are in 'chosen' and 'rejected'");
    expect(errorOf(() => toPreferencePair(rec({ ...value, chosen: 'four' }), format))).toBe("data/pairs.json: record 0: field 'chosen' must be one message object, got 'four'");
  });
});

describe('KTO datasets', () => {
  it("kto_en_demo's form: a sharegpt conversation and its boolean kto_tag column", () => {
    const format = registeredFormat('dataset_info.json', 'kto', {
      file_name: 'kto.json', formatting: 'sharegpt', columns: { messages: 'messages', kto_tag: 'label' }, tags: { role_tag: 'role', content_tag: 'content', user_tag: 'user', assistant_tag: 'assistant' },
    });
    const value = { messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }], label: false };
    expect(toKtoRecord(rec(value), format)).toEqual({ conversation: { turns: [{ user: 'hi', assistant: 'hello' }] }, desirable: false });
    expect(toKtoRecord(rec({ ...value, label: true }), format).desirable).toBe(true);
    expect(errorOf(() => toKtoRecord(rec({ ...value, label: 'yes' }), format))).toBe("data/pairs.json: record 0: field 'label' must be true or false, got 'yes'");
    expect(errorOf(() => toKtoRecord(rec({ messages: value.messages }), format))).toBe("data/pairs.json: record 0: field 'label' is missing");
    const unmapped = registeredFormat('dataset_info.json', 'plain', { file_name: 'p.json', formatting: 'sharegpt' });
    expect(errorOf(() => toKtoRecord(rec(value), unmapped))).toMatch(/^data\/pairs\.json: record 0: the dataset maps no kto_tag column/);
  });
});
