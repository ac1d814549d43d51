// Every way out of `train`, `chat` and `export` ends with the intended exit status and no crash on the way out:
// 0 on success, 1 with one "error:" line for bad input, 1 with a stack for a bug, 130 on Ctrl-C. Dawn's instance
// once was freed by the garbage collector while its device was still polled (exit 139/134 after the error line in
// a few runs out of ten), so each error path runs many times, several processes at once.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCli, runCli, spawnCli, tinyTrainYaml, writeTinyDataset, writeTinyModel, type CliResult } from './tiny-model.js';

/** Runs of each bad-input case; 8 cases, so 56 error runs in all. */
const REPEATS = 7;
/** Child processes at once (a busy machine is where the crash showed most). */
const CONCURRENCY = 4;

let root: string;
let entry: string;
let model: string;
let data: string;
let adapter: string;
/** The model with half of model.safetensors cut off. */
let truncated: string;
/** config.json claims a third layer whose tensors model.safetensors lacks. */
let missingTensor: string;

/** Dawn's notes on lavapipe when a device is made; not ours. */
const DAWN_NOTE = /^Warning: (maxDynamic\w+ artificially reduced|Backend validation enabled)/;
const ourLines = (stderr: string) => stderr.split('\n').filter((l) => l.trim() !== '' && !DAWN_NOTE.test(l));

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-exit-'));
  entry = buildCli('exit-codes');
  model = writeTinyModel(join(root, 'model'));
  data = writeTinyDataset(join(root, 'data'), 4);
  truncated = join(root, 'truncated');
  cpSync(model, truncated, { recursive: true });
  const weights = join(truncated, 'model.safetensors');
  truncateSync(weights, Math.floor(statSync(weights).size / 2));
  missingTensor = join(root, 'missing-tensor');
  cpSync(model, missingTensor, { recursive: true });
  const config = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')) as { num_hidden_layers: number };
  writeFileSync(join(missingTensor, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: config.num_hidden_layers + 1 }));
  writeFileSync(join(root, 'adapter.yaml'), tinyTrainYaml(model, data, join(root, 'adapter'), { max_steps: 1 }));
  const r = await runCli(entry, ['train', join(root, 'adapter.yaml')], root);
  if (r.code !== 0) throw new Error(`training the adapter fixture failed: ${r.stderr}`);
  adapter = join(root, 'adapter');
  // A bug stand-in: writing the answer throws a TypeError (not a UserError) while the GPU is generating.
  writeFileSync(join(root, 'inject-bug.mjs'), "process.stdout.write = () => { throw new TypeError('injected bug'); };\n");
}, 180_000);

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Run `jobs` with at most CONCURRENCY at once; results in order. */
async function pool<T>(jobs: (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]!();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return results;
}

interface Case {
  name: string;
  args: () => string[];
  /** What the one error line must say. */
  says: RegExp;
}

let outNo = 0;
const freshOut = () => join(root, `out${outNo++}`);

/** Bad inputs that are noticed after the GPU device exists (the exits that crashed) and one before. */
const CASES: Case[] = [
  { name: 'train: truncated model.safetensors', says: /model\.safetensors/, args: () => ['train', '--model_name_or_path', truncated, '--dataset', data, '--template', 'qwen3_nothink', '--cutoff_len', '32', '--max_steps', '1', '--output_dir', freshOut()] },
  { name: 'train: a tensor missing', says: /model\.layers\.2\..* is missing/, args: () => ['train', '--model_name_or_path', missingTensor, '--dataset', data, '--template', 'qwen3_nothink', '--cutoff_len', '32', '--max_steps', '1', '--output_dir', freshOut()] },
  { name: 'train: dataset not found (model already on the GPU)', says: /nope\.json/, args: () => ['train', '--model_name_or_path', model, '--dataset', join(root, 'nope.json'), '--template', 'qwen3_nothink', '--cutoff_len', '32', '--max_steps', '1', '--output_dir', freshOut()] },
  { name: 'chat: truncated model.safetensors', says: /model\.safetensors/, args: () => ['chat', '--model_name_or_path', truncated, '--prompt', 'hi', '--max_new_tokens', '2'] },
  { name: 'chat: adapter folder without adapter_config.json', says: /adapter_config\.json/, args: () => ['chat', '--model_name_or_path', model, '--adapter_name_or_path', data, '--prompt', 'hi', '--max_new_tokens', '2'] },
  { name: 'export: a tensor missing', says: /no tensor for blk\.2\./, args: () => ['export', '--model_name_or_path', missingTensor, '--export_dir', freshOut(), '--export_format', 'gguf', '--export_quantization', 'f16'] },
  { name: 'export: adapter folder without adapter_config.json', says: /adapter_config\.json/, args: () => ['export', '--model_name_or_path', model, '--adapter_name_or_path', data, '--export_dir', freshOut(), '--export_format', 'gguf-lora'] },
  { name: 'export: unknown format (before any GPU work)', says: /export_format must be one of/, args: () => ['export', '--model_name_or_path', model, '--export_dir', freshOut(), '--export_format', 'onnx'] },
];

const describeExit = (r: CliResult) => `code ${r.code}, signal ${r.signal}\n${r.stderr}`;

describe('exit codes', () => {
  test(`bad input: exit 1 and one error line, ${CASES.length} cases x ${REPEATS} runs`, async () => {
    const jobs = CASES.flatMap((c) => Array.from({ length: REPEATS }, () => async () => ({ c, r: await runCli(entry, c.args(), root) })));
    const runs = await pool(jobs);
    const bad = runs.filter(({ r }) => r.code !== 1 || r.signal !== null);
    expect(bad.map(({ c, r }) => `${c.name}: ${describeExit(r)}`), 'every run exits 1, none crashes').toEqual([]);
    for (const { c, r } of runs) {
      const lines = ourLines(r.stderr);
      expect(lines, `${c.name}: ${r.stderr}`).toHaveLength(1);
      expect(lines[0]).toMatch(/^error: /);
      expect(lines[0], c.name).toMatch(c.says);
    }
    expect(runs).toHaveLength(CASES.length * REPEATS);
    expect(runs.length).toBeGreaterThanOrEqual(50);
  }, 600_000);

  test('a bug (an unexpected exception after the GPU is up): exit 1 with its stack, no crash', async () => {
    const args = ['chat', '--model_name_or_path', model, '--adapter_name_or_path', adapter, '--prompt', 'hi', '--max_new_tokens', '4', '--temperature', '0'];
    const runs = await pool(Array.from({ length: 6 }, () => () => runCli(entry, args, root, 60_000, ['--import', join(root, 'inject-bug.mjs')])));
    for (const r of runs) {
      expect([r.code, r.signal], describeExit(r)).toEqual([1, null]);
      expect(r.stderr).toMatch(/TypeError: injected bug\n\s+at /);
    }
  }, 300_000);

  test('success: chat and export exit 0', async () => {
    const jobs = [
      () => runCli(entry, ['chat', '--model_name_or_path', model, '--adapter_name_or_path', adapter, '--prompt', 'hi', '--max_new_tokens', '3'], root),
      () => runCli(entry, ['export', '--model_name_or_path', model, '--adapter_name_or_path', adapter, '--export_dir', freshOut(), '--export_format', 'gguf-lora'], root),
    ];
    const runs = await pool([...jobs, ...jobs, ...jobs]);
    for (const r of runs) expect([r.code, r.signal], describeExit(r)).toEqual([0, null]);
  }, 300_000);

  test('Ctrl-C during training: exit 130, devices released, no crash', async () => {
    const interruptOnce = async (): Promise<CliResult & { steps: number }> => {
      const out = freshOut();
      const child = spawnCli(entry, ['train', '--model_name_or_path', model, '--dataset', data, '--template', 'qwen3_nothink', '--cutoff_len', '32', '--max_steps', '1000', '--logging_steps', '1', '--output_dir', out], root);
      let stderr = '';
      let stdout = '';
      child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const log = join(out, 'trainer_log.jsonl');
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((done) => child.on('close', (code, signal) => done([code, signal])));
      // Interrupt once training is under way (its first step logged), so GPU work is queued.
      const deadline = Date.now() + 90_000;
      while (!(existsSync(log) && readFileSync(log, 'utf8').includes('\n')) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
      const steps = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').length : 0;
      child.kill('SIGINT');
      const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const [code, signal] = await exited;
      clearTimeout(killer);
      return { code, signal, stdout, stderr, steps };
    };
    for (const r of [await interruptOnce(), await interruptOnce()]) {
      expect(r.steps, 'interrupted mid-training').toBeGreaterThanOrEqual(1);
      expect([r.code, r.signal], describeExit(r)).toEqual([130, null]);
      expect(ourLines(r.stderr)).toEqual(['interrupted']);
    }
  }, 300_000);
});
