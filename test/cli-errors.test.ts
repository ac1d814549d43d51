// Bad inputs through the real CLI: each must end with one line "error: ..." naming the file or key, exit code 1,
// no stack trace, no hang, and no adapter_model.safetensors left in output_dir.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCli, runCli, tinyTrainYaml, writeTinyDataset, writeTinyModel, type CliResult } from './tiny-model.js';

let root: string;
let entry: string;
let goodModel: string;
let goodData: string;
let goodAdapter: string;

/** Dawn prints these adapter-limit notes on lavapipe when a device is created; they are not ours. */
const DAWN_NOTE = /^Warning: (maxDynamic\w+ artificially reduced|Backend validation enabled)/;
const ourLines = (stderr: string) => stderr.split('\n').filter((l) => l.trim() !== '' && !DAWN_NOTE.test(l));

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-cli-errors-'));
  entry = buildCli('cli-errors');
  goodModel = writeTinyModel(join(root, 'model'));
  goodData = writeTinyDataset(join(root, 'data'), 4);
  // A valid adapter to corrupt: one short training run.
  writeFileSync(join(root, 'adapter.yaml'), tinyTrainYaml(goodModel, goodData, join(root, 'adapter'), { max_steps: 1 }));
  const r = await runCli(entry, ['train', join(root, 'adapter.yaml')], root);
  if (r.code !== 0) throw new Error(`training the adapter fixture failed: ${r.stderr}`);
  goodAdapter = join(root, 'adapter');
}, 180_000);

afterAll(() => rmSync(root, { recursive: true, force: true }));

let caseNo = 0;

/** A fresh case folder with a copy of the good model; `edit` breaks something, returns extra config keys. */
function makeCase(edit: (c: { dir: string; model: string; data: string }) => Record<string, unknown> | void): { yaml: string; out: string; dir: string } {
  const dir = join(root, `case${caseNo++}`);
  mkdirSync(dir);
  const model = join(dir, 'model');
  cpSync(goodModel, model, { recursive: true });
  const data = join(dir, 'data.json');
  cpSync(goodData, data);
  const extra = edit({ dir, model, data }) ?? {};
  const out = join(dir, 'out');
  const yaml = join(dir, 'train.yaml');
  writeFileSync(yaml, tinyTrainYaml(model, data, out, { max_steps: 2, ...extra }));
  return { yaml, out, dir };
}

function expectOneLineError(r: CliResult, out: string, ...mentions: (string | RegExp)[]): string {
  const lines = ourLines(r.stderr);
  expect(r.signal, 'no hang').toBeNull();
  expect(lines, r.stderr).toHaveLength(1);
  const line = lines[0]!;
  expect(line).toMatch(/^error: /);
  expect(line).not.toMatch(/\n\s+at /);
  for (const m of mentions) expect(line).toMatch(m);
  expect(r.code).toBe(1);
  expect(existsSync(join(out, 'adapter_model.safetensors')), 'no adapter left behind').toBe(false);
  return line;
}

/** Every message seen, printed at the end (the record of what each bad input gets). */
const seen: [string, string][] = [];

async function badRun(name: string, c: { yaml: string; out: string; dir: string }, args: string[] = [], ...mentions: (string | RegExp)[]): Promise<void> {
  const r = await runCli(entry, ['train', c.yaml, ...args], c.dir);
  seen.push([name, expectOneLineError(r, c.out, ...mentions)]);
}

describe('train: bad inputs give one line, exit 1, nothing valid-looking left', () => {
  afterAll(() => {
    console.log(seen.map(([n, m]) => `${n}\n    ${m}`).join('\n'));
  });

  test('truncated model.safetensors', async () => {
    const c = makeCase(({ model }) => {
      const f = join(model, 'model.safetensors');
      truncateSync(f, Math.floor(statSync(f).size / 2));
    });
    await badRun('truncated model.safetensors', c, [], 'model.safetensors');
  });

  test('config.json with a wrong type', async () => {
    const c = makeCase(({ model }) => {
      const f = join(model, 'config.json');
      writeFileSync(f, JSON.stringify({ ...JSON.parse(readFileSync(f, 'utf8')), hidden_size: '64' }));
    });
    await badRun('config.json hidden_size "64"', c, [], 'config.json', 'hidden_size');
  });

  test('config.json that is not JSON', async () => {
    const c = makeCase(({ model }) => writeFileSync(join(model, 'config.json'), '{"model_type": "qwen3",'));
    await badRun('config.json truncated', c, [], 'config.json');
  });

  test('missing tokenizer (the bundled Qwen3 one does not fit a 512-token model)', async () => {
    const c = makeCase(({ model }) => unlinkSync(join(model, 'tokenizer.json')));
    await badRun('tokenizer.json missing', c, [], /tokenizer/, /vocab_size 512/);
  });

  test('tokenizer.json that is not JSON', async () => {
    const c = makeCase(({ model }) => writeFileSync(join(model, 'tokenizer.json'), '{"model": '));
    await badRun('tokenizer.json truncated', c, [], 'tokenizer.json');
  });

  test('YAML syntax error', async () => {
    const c = makeCase(() => undefined);
    writeFileSync(c.yaml, readFileSync(c.yaml, 'utf8') + 'extra_list: [q_proj, v_proj\n');
    await badRun('YAML syntax error', c, [], 'train.yaml', /invalid YAML/);
  });

  test('YAML value of the wrong type', async () => {
    const c = makeCase(() => ({ lora_rank: 'four' }));
    await badRun('lora_rank: four', c, [], 'train.yaml', 'lora_rank');
  });

  test('unknown YAML key: a warning, and training goes on', async () => {
    const c = makeCase(() => ({ lora_rnak: 8 }));
    const r = await runCli(entry, ['train', c.yaml], c.dir);
    expect(r.code, r.stderr).toBe(0);
    expect(ourLines(r.stderr).filter((l) => /lora_rnak/.test(l))).toEqual([expect.stringMatching(/^warning: .*train\.yaml: unknown key 'lora_rnak'/)]);
    expect(existsSync(join(c.out, 'adapter_model.safetensors'))).toBe(true);
  });

  test('malformed JSONL line: names the file and the line', async () => {
    const c = makeCase(({ dir }) => {
      const f = join(dir, 'data.jsonl');
      writeFileSync(f, '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n');
      return { dataset: f };
    });
    await badRun('JSONL line 2 cut short', c, [], 'data.jsonl', 'line 2');
  });

  test('JSONL record with a field of the wrong type: names the file, the line and the field', async () => {
    const c = makeCase(({ dir }) => {
      const f = join(dir, 'data.jsonl');
      writeFileSync(f, '{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": 5}\n');
      return { dataset: f };
    });
    await badRun('JSONL output: 5', c, [], 'data.jsonl', 'line 3', "'output'");
  });

  test('empty dataset', async () => {
    const c = makeCase(({ data }) => writeFileSync(data, '[]'));
    await badRun('dataset []', c, [], 'data.json', /no records/);
  });

  test('no trainable sample left after filtering', async () => {
    const c = makeCase(({ data }) => {
      writeFileSync(data, JSON.stringify([{ instruction: 'x'.repeat(200), output: '' }]));
      return { cutoff_len: 1 };
    });
    await badRun('every sample loses its answer (cutoff_len 1)', c, [], 'data.json', /no sample with a trainable answer/);
  });

  test('cutoff_len beyond max_position_embeddings', async () => {
    const c = makeCase(() => ({ cutoff_len: 1000 }));
    await badRun('cutoff_len 1000 (model: 256)', c, [], 'cutoff_len', '256');
  });

  test('lora_rank larger than a projection dimension', async () => {
    const c = makeCase(() => ({ lora_rank: 40 }));
    await badRun('lora_rank 40 (k_proj out = 32)', c, [], 'lora_rank 40', 'k_proj');
  });

  test('adapter folder with a wrong shape', async () => {
    const c = makeCase(({ dir }) => {
      const adapter = join(dir, 'adapter');
      cpSync(goodAdapter, adapter, { recursive: true });
      const f = join(adapter, 'adapter_config.json');
      writeFileSync(f, JSON.stringify({ ...JSON.parse(readFileSync(f, 'utf8')), r: 8 }));
      return { adapter_name_or_path: adapter };
    });
    await badRun('adapter_config.json r 8, tensors of rank 4', c, [], 'adapter_model.safetensors', /shape \[4,64\], expected \[8,64\]/);
  });

  test('adapter folder without adapter_config.json', async () => {
    const c = makeCase(({ dir }) => {
      mkdirSync(join(dir, 'adapter'));
      return { adapter_name_or_path: join(dir, 'adapter') };
    });
    await badRun('empty adapter folder', c, [], 'adapter_config.json');
  });

  test('model path that does not exist', async () => {
    const c = makeCase(({ dir }) => ({ model_name_or_path: join(dir, 'nowhere') }));
    await badRun('model_name_or_path missing', c, [], 'nowhere');
  });

  test('dataset file that does not exist', async () => {
    const c = makeCase(({ dir }) => ({ dataset: join(dir, 'missing.json') }));
    await badRun('dataset missing', c, [], 'missing.json');
  });

  test('resume with no checkpoint', async () => {
    const c = makeCase(() => ({ resume_from_checkpoint: 'true' }));
    await badRun('resume_from_checkpoint true, no checkpoint', c, [], 'resume_from_checkpoint');
  });

  test('a required key left out', async () => {
    const c = makeCase(() => undefined);
    writeFileSync(c.yaml, readFileSync(c.yaml, 'utf8').replace(/^dataset:.*\n/m, ''));
    await badRun('no dataset key', c, [], 'dataset is required');
  });
});
