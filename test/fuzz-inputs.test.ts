// Property tests of every reader of user files: whatever config.json, train YAML, dataset JSON/JSONL,
// adapter_config.json, tokenizer files or trainer_state.json hold, reading either succeeds or throws a UserError
// (one line for the CLI), never a TypeError or another crash.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testGpu } from './helpers.js';
import { TINY_CONFIG, writeTinyModel, writeTinyDataset, tinyTrainYaml } from './tiny-model.js';
import type { Gpu } from '../src/gpu/device.js';
import { UserError } from '../src/errors.js';
import { loadModelConfig, modelConfigToJson } from '../src/model/config.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { loadTrainConfig } from '../src/train/config.js';
import { loadDatasets } from '../src/train/dataset.js';
import { initLora, loadPeftAdapter, releaseLora, savePeftAdapter } from '../src/train/lora.js';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';

const RUNS = 150;

let root: string;
let gpu: Gpu;
let adapterDir: string;
let checkpointDir: string;
let file = 0;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-fuzz-'));
  gpu = await testGpu();
  writeTinyModel(join(root, 'model'));
  // A valid adapter and checkpoint whose JSON files the properties replace.
  const lora = initLora(gpu, TINY_CONFIG, { rank: 2, alpha: 4, rslora: false, dropout: 0, targets: ['q_proj', 'v_proj'] }, 1);
  adapterDir = join(root, 'adapter');
  await savePeftAdapter(gpu, lora, adapterDir, null);
  checkpointDir = join(root, 'checkpoint-1');
  const zeros = (n: number) => new Float32Array(n);
  await saveCheckpoint(gpu, checkpointDir, lora, { m: [zeros(4)], v: [zeros(4)], step: 1 }, { global_step: 1, log_history: [] }, null);
  releaseLora(gpu, lora);
});

afterAll(() => {
  gpu?.destroy();
  rmSync(root, { recursive: true, force: true });
});

/** Run `read`; a throw must be a UserError whose message is one line. */
async function userErrorOrSuccess(read: () => unknown): Promise<void> {
  try {
    await read();
  } catch (e) {
    if (!(e instanceof UserError)) throw new Error(`not a UserError: ${(e as Error)?.stack ?? String(e)}`);
    expect(e.message).not.toContain('\n');
  }
}

/** A fresh folder for one generated case. */
function caseDir(): string {
  const dir = join(root, `case${file++}`);
  mkdirSync(dir);
  return dir;
}

/** A valid object with one key replaced by an arbitrary JSON value, or removed, or an arbitrary value outright. */
function mutated(valid: Record<string, unknown>): fc.Arbitrary<unknown> {
  const keys = Object.keys(valid);
  return fc.oneof(
    fc.record({ key: fc.constantFrom(...keys), value: fc.jsonValue() }).map(({ key, value }) => ({ ...valid, [key]: value })),
    fc.constantFrom(...keys).map((key) => Object.fromEntries(Object.entries(valid).filter(([k]) => k !== key))),
    fc.jsonValue(),
  );
}

/** Text as written to a file: JSON of the value, sometimes cut short or with a stray byte. */
function asText(value: fc.Arbitrary<unknown>): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: value.map((v) => JSON.stringify(v) ?? 'null') },
    { weight: 1, arbitrary: fc.tuple(value, fc.nat()).map(([v, n]) => { const s = JSON.stringify(v) ?? 'null'; return s.slice(0, n % (s.length + 1)); }) },
    { weight: 1, arbitrary: fc.string() },
  );
}

describe('every reader fails with a UserError, never a crash', () => {
  test('config.json', async () => {
    const valid = modelConfigToJson(TINY_CONFIG);
    await fc.assert(fc.asyncProperty(asText(mutated(valid)), async (text) => {
      const dir = caseDir();
      writeFileSync(join(dir, 'config.json'), text);
      await userErrorOrSuccess(() => loadModelConfig(dir));
    }), { numRuns: RUNS, seed: 11 });
  });

  test('train YAML', async () => {
    const dataset = writeTinyDataset(join(root, 'yaml-data'), 2);
    const validText = tinyTrainYaml(join(root, 'model'), dataset, join(root, 'yaml-out'));
    const lines = validText.trim().split('\n');
    const yamlScalar = fc.oneof(fc.string(), fc.integer().map(String), fc.double().map(String), fc.constantFrom('true', 'null', '[', '{a: 1}', '- x', '"', '~', '0x10', '.inf', '1e-400'));
    const yamlText = fc.oneof(
      fc.record({ line: fc.nat(lines.length - 1), value: yamlScalar }).map(({ line, value }) =>
        lines.map((l, i) => (i === line ? `${l.split(':')[0]}: ${value}` : l)).join('\n')),
      fc.record({ key: fc.string(), value: yamlScalar }).map(({ key, value }) => `${validText}${key}: ${value}\n`),
      fc.string(),
      fc.jsonValue().map((v) => JSON.stringify(v) ?? ''),
    );
    await fc.assert(fc.asyncProperty(yamlText, async (text) => {
      const yaml = join(caseDir(), 'train.yaml');
      writeFileSync(yaml, text);
      await userErrorOrSuccess(() => loadTrainConfig([yaml]));
    }), { numRuns: RUNS, seed: 12 });
  });

  test('train command-line overrides', async () => {
    const dataset = writeTinyDataset(join(root, 'argv-data'), 2);
    const arg = fc.oneof(fc.string(), fc.constantFrom('--', '--=', '--lora_rank', '--lora_rank=', 'lora_rank=', '=x', '--cutoff_len=-1'));
    await fc.assert(fc.asyncProperty(fc.array(arg, { maxLength: 6 }), async (args) => {
      await userErrorOrSuccess(() => loadTrainConfig(['--model_name_or_path', join(root, 'model'), '--dataset', dataset, ...args]));
    }), { numRuns: RUNS, seed: 13 });
  });

  test('dataset JSON and JSONL', async () => {
    const alpaca = { instruction: 'a', input: 'b', output: 'c', system: 's', history: [['u', 'v']] };
    const sharegpt = { conversations: [{ from: 'human', value: 'a' }, { from: 'gpt', value: 'b' }], system: 's' };
    const openai = { messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] };
    const record = fc.oneof(mutated(alpaca), mutated(sharegpt), mutated(openai));
    const content = fc.oneof(
      asText(fc.array(record, { minLength: 0, maxLength: 3 })),
      fc.array(asText(record), { maxLength: 4 }).map((ls) => ls.join('\n')),
    );
    await fc.assert(fc.asyncProperty(content, fc.constantFrom('data.json', 'data.jsonl'), async (text, name) => {
      const dir = caseDir();
      writeFileSync(join(dir, name), text);
      await userErrorOrSuccess(() => loadDatasets({ dataset: name, dataset_dir: dir }));
    }), { numRuns: RUNS, seed: 14 });
  });

  test('dataset_info.json', async () => {
    const valid = { mine: { file_name: 'data.json', formatting: 'sharegpt', columns: { messages: 'conversations' }, tags: { role_tag: 'from' } } };
    const info = fc.oneof(mutated(valid), mutated(valid.mine).map((entry) => ({ mine: entry })));
    await fc.assert(fc.asyncProperty(asText(info), async (text) => {
      const dir = caseDir();
      writeFileSync(join(dir, 'dataset_info.json'), text);
      writeFileSync(join(dir, 'data.json'), JSON.stringify([{ conversations: [{ from: 'human', value: 'a' }, { from: 'gpt', value: 'b' }] }]));
      await userErrorOrSuccess(() => loadDatasets({ dataset: 'mine', dataset_dir: dir }));
    }), { numRuns: RUNS, seed: 15 });
  });

  test('adapter_config.json', async () => {
    const valid = { peft_type: 'LORA', r: 2, lora_alpha: 4, lora_dropout: 0, use_rslora: false, target_modules: ['q_proj', 'v_proj'], use_dora: false };
    await fc.assert(fc.asyncProperty(asText(mutated(valid)), async (text) => {
      const dir = caseDir();
      cpSync(join(adapterDir, 'adapter_model.safetensors'), join(dir, 'adapter_model.safetensors'));
      writeFileSync(join(dir, 'adapter_config.json'), text);
      await userErrorOrSuccess(() => releaseLora(gpu, loadPeftAdapter(gpu, dir, TINY_CONFIG)));
    }), { numRuns: RUNS, seed: 16 });
  });

  test('trainer_state.json of a checkpoint', async () => {
    const valid = { global_step: 1, log_history: [{ current_steps: 1, loss: 1 }] };
    await fc.assert(fc.asyncProperty(asText(mutated(valid)), async (text) => {
      const dir = caseDir();
      cpSync(checkpointDir, dir, { recursive: true });
      writeFileSync(join(dir, 'trainer_state.json'), text);
      await userErrorOrSuccess(() => loadCheckpoint(dir));
    }), { numRuns: RUNS, seed: 17 });
  });

  test('tokenizer.json and tokenizer_config.json', async () => {
    const tokenizerConfig = { eos_token: '<|im_end|>', bos_token: null, chat_template: '{{ messages }}', clean_up_tokenization_spaces: false };
    const tokenizerJson = { version: '1.0', added_tokens: [{ id: 0, content: '<|im_end|>', special: true }], model: { type: 'BPE', vocab: { a: 1, b: 2, ab: 3 }, merges: ['a b'] } };
    await fc.assert(fc.asyncProperty(asText(mutated(tokenizerJson)), asText(mutated(tokenizerConfig)), async (json, config) => {
      const dir = caseDir();
      writeFileSync(join(dir, 'tokenizer.json'), json);
      writeFileSync(join(dir, 'tokenizer_config.json'), config);
      await userErrorOrSuccess(() => Tokenizer.load(dir));
    }), { numRuns: 60, seed: 18 });
  });
});
