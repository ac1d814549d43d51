import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { FIXTURES } from './helpers.js';

const TEXT = 'Hello wörld, 12345 tokens! 🙂\n\tsecond line';

describe('fixture tokenizers', () => {
  for (const [name, vocab] of [['tiny-tied', 512], ['small-untied', 1000]] as const) {
    it(`${name}: round trip, special tokens, ChatML template`, async () => {
      const tok = await Tokenizer.load(join(FIXTURES, name, 'model'));
      expect(tok.vocabSize).toBe(vocab);
      expect(tok.tokenId('<|endoftext|>')).toBe(vocab - 3);
      expect(tok.tokenId('<|im_start|>')).toBe(vocab - 2);
      expect(tok.tokenId('<|im_end|>')).toBe(vocab - 1);
      expect(tok.tokenId('not a token at all')).toBeUndefined();
      expect(tok.eosTokenId).toBe(vocab - 1);
      expect(tok.json.model.type).toBe('BPE');
      expect(tok.config.eos_token).toBe('<|im_end|>');

      const ids = tok.encode(TEXT);
      expect(ids.every((i) => Number.isInteger(i) && i >= 0 && i < vocab - 3)).toBe(true);
      expect(tok.decode(ids)).toBe(TEXT);
      expect(tok.encode('')).toEqual([]);
      expect(tok.decode([])).toBe('');

      // Special tokens written in the text are single ids; nothing is added around the text.
      const chat = tok.encode('<|im_start|>user\nhi<|im_end|>');
      expect(chat[0]).toBe(vocab - 2);
      expect(chat.at(-1)).toBe(vocab - 1);
      expect(tok.decode(chat)).toBe('<|im_start|>user\nhi<|im_end|>');
      expect(tok.decode(chat, true)).toBe('user\nhi');

      const rendered = tok.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }]);
      expect(rendered).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n');
      expect(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true })).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    });
  }
});

describe('bundled Qwen3 tokenizer', () => {
  let tok: Tokenizer;
  beforeAll(async () => {
    tok = await Tokenizer.load();
  });

  it('has the Qwen3 vocabulary and special ids', () => {
    expect(tok.vocabSize).toBe(151669);
    expect(tok.tokenId('<|endoftext|>')).toBe(151643);
    expect(tok.tokenId('<|im_start|>')).toBe(151644);
    expect(tok.tokenId('<|im_end|>')).toBe(151645);
    expect(tok.tokenId('<think>')).toBe(151667);
    expect(tok.tokenId('</think>')).toBe(151668);
    expect(tok.eosTokenId).toBe(151645);
  });

  it('round-trips text and recognises special tokens', () => {
    const ids = tok.encode(TEXT);
    expect(tok.decode(ids)).toBe(TEXT);
    // Qwen2/3 BPE splits digits one by one.
    expect(tok.encode('12345').length).toBe(5);
    expect(tok.encode('<|im_start|>user\nHi<|im_end|>')).toEqual([151644, 872, 198, 13048, 151645]);
  });

  it('renders the Qwen3 chat template, with and without thinking', () => {
    const messages = [{ role: 'user' as const, content: 'Hi' }];
    expect(tok.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    expect(tok.applyChatTemplate(messages, { addGenerationPrompt: true, enableThinking: false }))
      .toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n');
    // The last assistant turn after the last user query carries its (empty) think block.
    expect(tok.applyChatTemplate([...messages, { role: 'assistant', content: 'Hello.' }]))
      .toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello.<|im_end|>\n');
  });
});

describe('tokenizer folders', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tokenizer-test-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('falls back to the bundled Qwen3 tokenizer when the folder has no tokenizer.json', async () => {
    const tok = await Tokenizer.load(tmp);
    expect(tok.tokenId('<|im_end|>')).toBe(151645);
  });

  it('reports an unreadable tokenizer.json and a missing chat template as UserErrors', async () => {
    const bad = join(tmp, 'bad');
    mkdirSync(bad);
    writeFileSync(join(bad, 'tokenizer.json'), '{ not json');
    await expect(Tokenizer.load(bad)).rejects.toThrow(UserError);
    await expect(Tokenizer.load(bad)).rejects.toThrow(/bad\/tokenizer.json: not valid JSON/);

    const noTemplate = join(tmp, 'no-template');
    mkdirSync(noTemplate);
    const src = join(FIXTURES, 'tiny-tied', 'model');
    writeFileSync(join(noTemplate, 'tokenizer.json'), readFileSync(join(src, 'tokenizer.json')));
    const config = JSON.parse(readFileSync(join(src, 'tokenizer_config.json'), 'utf8'));
    delete config.chat_template;
    writeFileSync(join(noTemplate, 'tokenizer_config.json'), JSON.stringify(config));
    const tok = await Tokenizer.load(noTemplate);
    expect(tok.chatTemplate).toBeUndefined();
    expect(() => tok.applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(/has no chat_template/);
  });
});
