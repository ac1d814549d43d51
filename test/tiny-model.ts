// Test fixtures made at test time: a random tiny Qwen3 folder with the fixture tokenizer, a small alpaca
// dataset, and the CLI built into a private folder (parallel test files must not rebuild one shared dist/).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { TINY_QWEN3, type ModelConfig } from '../src/model/config.js';
import { writeRandomModel } from '../src/model/random-model.js';
import { FIXTURES } from './helpers.js';

const REPO = resolve(import.meta.dirname, '..');
/** The tiny fixture model's tokenizer (512 ids), copied next to random weights. */
const FIXTURE_TOKENIZER_DIR = `${FIXTURES}/tiny-tied/model`;

/** The tiny fixture's shape: 2 layers, hidden 64, 4 heads / 2 KV heads of 16, vocab 512. */
export const TINY_CONFIG: ModelConfig = TINY_QWEN3;

/** A model folder: config.json, model.safetensors (seeded random weights) and the fixture tokenizer files. */
export function writeTinyModel(dir: string, o: { config?: ModelConfig; seed?: number; dtype?: 'F32' | 'BF16' } = {}): string {
  writeRandomModel(dir, o.config ?? TINY_CONFIG, o.seed ?? 1, o.dtype ?? 'F32');
  return copyFixtureTokenizer(dir);
}

/** Copy the fixture tokenizer (512 ids) into a model folder; returns the folder. */
export function copyFixtureTokenizer(dir: string): string {
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(FIXTURE_TOKENIZER_DIR, f), join(dir, f));
  return dir;
}

/** `n` short alpaca records (a few dozen tokens each with this tokenizer) in `dir/name`. */
export function writeTinyDataset(dir: string, n: number, name = 'tiny.json'): string {
  mkdirSync(dir, { recursive: true });
  const records = Array.from({ length: n }, (_, i) => ({ instruction: `Add ${i} and ${i + 1}.`, input: '', output: `${2 * i + 1}` }));
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify(records, null, 1));
  return file;
}

/** A YAML train config for the tiny model (LLaMA-Factory keys; values given override the defaults here). */
export function tinyTrainYaml(modelDir: string, dataset: string, outputDir: string, extra: Record<string, unknown> = {}): string {
  const keys: Record<string, unknown> = {
    model_name_or_path: modelDir,
    dataset,
    template: 'qwen3_nothink',
    cutoff_len: 32,
    output_dir: outputDir,
    lora_rank: 4,
    lora_target: 'all',
    per_device_train_batch_size: 2,
    gradient_accumulation_steps: 1,
    learning_rate: 1e-2,
    num_train_epochs: 1,
    lr_scheduler_type: 'cosine',
    logging_steps: 1,
    save_steps: 1000,
    seed: 7,
    ...extra,
  };
  return Object.entries(keys).map(([k, v]) => `${k}: ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`).join('\n') + '\n';
}

/**
 * Compile src/ into node_modules/.cache/loraforge-<checkout>-<name>/dist (packages still resolve from the repo) and
 * write an entry script doing what bin/loraforge.js does. Returns the entry's path. The checkout's folder name is
 * part of the path because git worktrees may share one node_modules.
 */
export function buildCli(name: string): string {
  const outDir = join(REPO, 'node_modules', '.cache', `loraforge-${basename(REPO)}-${name}`, 'dist');
  // Type errors elsewhere in a tree being edited do not stop the emit; a missing output does (checked below).
  spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json', '--outDir', outDir], { cwd: REPO, stdio: 'ignore' });
  const entry = join(outDir, 'loraforge-entry.js');
  writeFileSync(entry, "import { main } from './cli.js';\nprocess.exitCode = await main(process.argv.slice(2));\n");
  return entry;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Run the CLI entry with `args` in `cwd` (`nodeArgs` go to node itself); kills it after `timeoutMs` (a hang is a
 * failure, not a wait).
 */
export function runCli(entry: string, args: string[], cwd: string, timeoutMs = 60_000, nodeArgs: string[] = []): Promise<CliResult> {
  return new Promise((done, fail) => {
    const child = spawnCli(entry, args, cwd, nodeArgs);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', fail);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout, stderr });
    });
  });
}

export function spawnCli(entry: string, args: string[], cwd: string, nodeArgs: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeArgs, entry, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}
