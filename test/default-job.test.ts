// The embedded default job (`node train.js` without arguments), its byte-level tokenizer, and the shipped
// Qwen3-0.6B example config run against a tiny local model.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildByteTokenizer, BYTE_TOKENIZER_SPECIAL_TOKENS } from '../src/model/byte-tokenizer.js';
import { writeByteTokenizer } from '../src/train/default-job.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { writeRandomModel } from '../src/model/random-model.js';
import type { ModelConfig } from '../src/model/config.js';
import { loadTrainConfig } from '../src/train/config.js';
import { loadDatasets } from '../src/train/dataset.js';
import { encodeConversation } from '../src/train/template.js';
import { trainFromConfig } from '../src/train/run.js';
import { DEFAULT_JOB_MODEL, PACKAGE_DATA_DIR, trainDefaultJob } from '../src/train/default-job.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'loraforge-default-job-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

const CORPUS = ['user\nIs 12 even or odd?', 'assistant\neven', 'user\nIl numero 7 è pari o dispari?', 'assistant\ndispari'];

describe('byte-level BPE tokenizer', () => {
  it('round-trips any text, keeps special tokens whole and learns merges only from the corpus', async () => {
    const dir = path.join(tmpRoot, 'tok');
    const vocabSize = writeByteTokenizer(dir, CORPUS, 320);
    const tok = await Tokenizer.load(dir);
    expect(tok.vocabSize).toBe(vocabSize);
    expect(vocabSize).toBeLessThan(320); // the corpus runs out of pairs to merge first
    expect(tok.eosTokenId).toBe(tok.tokenId('<|im_end|>'));
    BYTE_TOKENIZER_SPECIAL_TOKENS.forEach((t, i) => expect(tok.tokenId(t)).toBe(vocabSize - BYTE_TOKENIZER_SPECIAL_TOKENS.length + i));
    for (const text of ['Is 12 even or odd?', 'Perché è così? 🍕 naïve\ttab\r\n  spaces', '<|im_start|>user\nciao<|im_end|>\n', '\u0000\u007f']) {
      const ids = tok.encode(text);
      expect(tok.decode(ids)).toBe(text.normalize('NFC'));
    }
    // Words of the corpus become single tokens; digits always stay single characters.
    expect(tok.encode('dispari')).toHaveLength(1);
    expect(tok.encode(' even')).toHaveLength(1);
    expect(tok.encode('12')).toHaveLength(2);
    expect(tok.encode('<|im_end|>')).toEqual([tok.eosTokenId]);
  });

  it('is a function of the corpus alone', () => {
    expect(JSON.stringify(buildByteTokenizer(CORPUS, 280))).toBe(JSON.stringify(buildByteTokenizer([...CORPUS], 280)));
    expect(() => buildByteTokenizer(CORPUS, 100)).toThrow(/vocabSize must be an integer >= 261/);
  });

  it("renders the chat the way qwen3_nothink trains on it", async () => {
    const dir = path.join(tmpRoot, 'tok');
    const tok = await Tokenizer.load(dir);
    const conversation = { turns: [{ user: 'Is 12 even or odd?', assistant: 'even' }] };
    const rendered = tok.applyChatTemplate([{ role: 'user', content: 'Is 12 even or odd?' }, { role: 'assistant', content: 'even' }]);
    expect(tok.encode(rendered)).toEqual(encodeConversation(conversation, tok, { template: 'qwen3_nothink', cutoffLen: 1000, trainOnPrompt: false }).inputIds);
    expect(tok.applyChatTemplate([{ role: 'user', content: 'x' }], { addGenerationPrompt: true })).toBe('<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n');
    expect(tok.applyChatTemplate([{ role: 'user', content: 'x' }], { addGenerationPrompt: true, enableThinking: false })).toMatch(/assistant\n<think>\n\n<\/think>\n\n$/);
  });
});

describe('parity dataset', () => {
  it('is registered, balanced between languages, and its held-out numbers never occur in training', () => {
    const train = loadDatasets({ dataset: 'parity', dataset_dir: PACKAGE_DATA_DIR });
    const heldout = loadDatasets({ dataset: 'parity_heldout', dataset_dir: PACKAGE_DATA_DIR });
    expect(train.length).toBeGreaterThanOrEqual(300);
    expect(heldout).toHaveLength(40);
    const numberOf = (q: string) => Number(/\d+/.exec(q)![0]);
    const trainNumbers = new Set(train.map((c) => numberOf(c.turns[0]!.user)));
    for (const c of [...train, ...heldout]) {
      const { user, assistant } = c.turns[0]!;
      const n = numberOf(user);
      expect(assistant).toBe(/even or odd/.test(user) ? (n % 2 ? 'odd' : 'even') : n % 2 ? 'dispari' : 'pari');
    }
    for (const c of heldout) expect(trainNumbers.has(numberOf(c.turns[0]!.user))).toBe(false);
    expect(heldout.filter((c) => /pari/.test(c.turns[0]!.user))).toHaveLength(20);
  });
});

describe('examples/qwen3-0.6b-lora-sft.yaml', () => {
  const yaml = 'examples/qwen3-0.6b-lora-sft.yaml';

  it('reads without warnings as LLaMA-Factory’s Qwen3 LoRA SFT settings', () => {
    const { config, warnings } = loadTrainConfig([yaml]);
    expect(warnings).toEqual([]);
    expect(config).toMatchObject({
      model_name_or_path: 'Qwen/Qwen3-0.6B', template: 'qwen3_nothink', lora_rank: 8, lora_alpha: 16, dataset: 'demo_alpaca',
      cutoff_len: 2048, per_device_train_batch_size: 1, gradient_accumulation_steps: 8, learning_rate: 1e-4, num_train_epochs: 3,
      lr_scheduler_type: 'cosine', warmup_ratio: 0.1, bf16: true, output_dir: 'saves/qwen3-0.6b/lora/sft', logging_steps: 10,
      save_steps: 500, plot_loss: true, overwrite_output_dir: true,
    });
    expect(config.lora_target).toHaveLength(7);
  });

  it('trains a local model folder given on the command line', async () => {
    const modelDir = path.join(tmpRoot, 'tiny-model');
    const corpus = loadDatasets({ dataset: 'demo_alpaca', dataset_dir: 'data' }).map((c) => `${c.turns[0]!.user}\n${c.turns[0]!.assistant}`);
    const vocabSize = writeByteTokenizer(modelDir, corpus, 300);
    const tiny: ModelConfig = { ...DEFAULT_JOB_MODEL, vocabSize, hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 16 };
    writeRandomModel(modelDir, tiny, 7, 'BF16');
    const outputDir = path.join(tmpRoot, 'yaml-run');
    const { config, warnings } = loadTrainConfig([yaml, '--model_name_or_path', modelDir, '--max_steps', '2', '--cutoff_len', '64', '--output_dir', outputDir]);
    expect(warnings).toEqual([]);
    const result = await trainFromConfig(config);
    expect(result.steps).toBe(2);
    expect(Number.isFinite(result.finalLoss)).toBe(true);
    for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'trainer_log.jsonl', 'training_loss.svg']) expect(fs.existsSync(path.join(outputDir, f))).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(outputDir, 'adapter_config.json'), 'utf8'))).toMatchObject({ r: 8, lora_alpha: 16 });
  });
});

describe('default job', () => {
  it('writes the base model, trains, scores before and after, and leaves its outputs', async () => {
    const outputDir = path.join(tmpRoot, 'default');
    const lines: string[] = [];
    const result = await trainDefaultJob({ outputDir, maxSteps: 15, heldout: 4, print: (l) => lines.push(l) });
    expect(result.steps).toBe(15);
    expect(result.finalLoss).toBeLessThanOrEqual(0.8 * result.firstLoss);
    for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'trainer_log.jsonl', 'training_loss.svg', 'sample.txt', 'base_model/config.json', 'base_model/model.safetensors', 'base_model/tokenizer.json', 'base_model/tokenizer_config.json']) {
      expect(fs.existsSync(path.join(outputDir, f)), f).toBe(true);
    }
    const log = fs.readFileSync(path.join(outputDir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(log.at(-1).current_steps).toBe(15);
    expect(fs.readFileSync(path.join(outputDir, 'sample.txt'), 'utf8').split('\n').filter((l) => / -> /.test(l))).toHaveLength(4);
    expect(lines.some((l) => l.startsWith('score before training'))).toBe(true);
    expect(lines.some((l) => l.startsWith('score after training'))).toBe(true);
  });
});
