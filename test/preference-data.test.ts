// Ranking (preference) records read as LLaMA-Factory reads them: alpaca with chosen/rejected columns, sharegpt
// whose messages end with the user's turn and chosen/rejected assistant messages; errors name the record and field; KTO records with their kto_tag label;
// the two rows per example of stages dpo / kto and their micro-batches.
import { describe, expect, it } from 'vitest';
import { registeredFormat, toKtoRecord, toPreferencePair, type Conversation, type SourcedRecord } from '../src/train/dataset-format.js';
import { layoutKto, layoutPairs } from '../src/train/preference-data.js';
import { microBatch } from '../src/train/prepare.js';
import { epochOrder } from '../src/train/batch.js';
import { encodeConversation, encodePromptResponse } from '../src/train/template.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { TINY_QWEN3 } from '../src/model/model-config.js';
import { FIXTURES } from './helpers.js';

const TOKENIZER_DIR = `${FIXTURES}/tiny-tied/model`;

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

describe('preference rows (preference-data.ts) and their micro-batches', () => {
  const settings = { dataset: 'd', cutoff_len: 64, template: 'qwen3_nothink' as const, train_on_prompt: false, enable_thinking: true, val_size: 0, seed: 3, packing: false, neat_packing: false };
  const conv = (user: string, assistant: string): Conversation => ({ turns: [{ user, assistant }] });
  const encode = (tok: Tokenizer, c: Conversation) => encodeConversation(c, tok, { template: 'qwen3_nothink', cutoffLen: 64, trainOnPrompt: false, enableThinking: true });

  it('dpo: each pair is the chosen row and the rejected row; a micro-batch is chosen rows, then rejected rows, padded', async () => {
    const tok = await Tokenizer.load(TOKENIZER_DIR);
    const pairs = [0, 1, 2].map((i) => ({ chosen: conv(`Q${i}`, `yes ${i}`), rejected: conv(`Q${i}`, `no no ${i}`) }));
    const data = layoutPairs(pairs, undefined, settings, tok, TINY_QWEN3);
    expect(data.T % 8).toBe(0);
    expect(data.train.map((r) => r.inputIds)).toEqual(pairs.map((p) => encode(tok, p.chosen).inputIds));
    expect(data.second!.train.map((r) => r.inputIds)).toEqual(pairs.map((p) => encode(tok, p.rejected).inputIds));
    // 3 pairs, 2 per micro-batch: the second micro-batch of the epoch holds one pair and an empty pair.
    const order = epochOrder(3, settings.seed, 0);
    const b = microBatch(data, 2, settings.seed, 1);
    expect(b.B).toBe(4);
    const row = (r: number, n: number) => [...b.inputIds.subarray(r * b.T, r * b.T + n)];
    const chosen = data.train[order[2]!]!.inputIds, rejected = data.second!.train[order[2]!]!.inputIds;
    expect(row(0, chosen.length)).toEqual(chosen);
    expect(row(2, rejected.length)).toEqual(rejected);
    for (const r of [1, 3]) expect([...b.targets.subarray(r * b.T, (r + 1) * b.T)].every((t) => t === -100)).toBe(true);
  });

  it("multi-turn pairs as LLaMA-Factory's encode_oneturn: earlier answers are prompt (untrained, no empty thought); both answers cut to one length", async () => {
    const tok = await Tokenizer.load(TOKENIZER_DIR);
    const history = { user: 'first question', assistant: 'first answer' };
    const pair = { chosen: { turns: [history, { user: 'Q', assistant: 'short' }] }, rejected: { turns: [history, { user: 'Q', assistant: 'a much longer rejected answer that goes on and on' }] } };
    const thinking = { ...settings, template: 'qwen3' as const, cutoff_len: 40 };
    const data = layoutPairs([pair], undefined, thinking, tok, TINY_QWEN3);
    const chosen = data.train[0]!, rejected = data.second!.train[0]!;
    const { prompt, response } = encodePromptResponse(pair.chosen, tok, { template: 'qwen3', cutoffLen: 40, trainOnPrompt: false, enableThinking: true });
    // The history answer carries no <think></think> block; the last answer does (thinking on).
    const think = tok.encode('<think>\n\n</think>\n\n');
    const count = (ids: number[]) => ids.filter((_, i) => think.every((t, j) => ids[i + j] === t)).length;
    expect(count(prompt)).toBe(0);
    expect(count(response)).toBe(1);
    // Cut together: the same prompt tokens in both rows, the answers at most the same length; only answers trained.
    const promptLen = chosen.labels.findIndex((l) => l !== -100);
    expect(rejected.labels.findIndex((l) => l !== -100)).toBe(promptLen);
    expect(chosen.inputIds.slice(0, promptLen)).toEqual(rejected.inputIds.slice(0, promptLen));
    expect(rejected.inputIds.length).toBeLessThanOrEqual(40);
    expect(chosen.inputIds.length).toBeLessThanOrEqual(rejected.inputIds.length);
    expect(chosen.labels.slice(promptLen)).toEqual(response.slice(0, chosen.inputIds.length - promptLen));
  });

  it("kto: the KL row is the prompt with the previous example's answer (the first takes the last one's); flags per example", async () => {
    const tok = await Tokenizer.load(TOKENIZER_DIR);
    const records = [0, 1, 2].map((i) => ({ conversation: conv(`Q${i}`, `A${i}`), desirable: i !== 1 }));
    const data = layoutKto(records, undefined, settings, tok, TINY_QWEN3);
    expect(data.second!.train.map((r) => r.inputIds)).toEqual([conv('Q0', 'A2'), conv('Q1', 'A0'), conv('Q2', 'A1')].map((c) => encode(tok, c).inputIds));
    expect(data.desirable!.train).toEqual([true, false, true]);
    const order = epochOrder(3, settings.seed, 0);
    const b = microBatch(data, 2, settings.seed, 0);
    expect([...b.desirable!]).toEqual(order.slice(0, 2).map((k) => (k !== 1 ? 1 : 0)));
  });
});
