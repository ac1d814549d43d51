// Kill test: a real `loraforge train` process killed with SIGKILL at seeded random moments, some of them right as a
// checkpoint folder starts being written. After every kill each checkpoint-N present must load, stale temporary
// folders must never be taken for checkpoints, and resuming from the latest must end with exactly the adapter of an
// uninterrupted run.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { rng, testGpu } from './helpers.js';
import { buildCli, runCli, spawnCli, tinyTrainYaml, writeTinyDataset, writeTinyModel, TINY_CONFIG } from './tiny-model.js';
import type { Gpu } from '../src/gpu/device.js';
import { latestCheckpoint, loadCheckpoint } from '../src/train/checkpoint.js';
import { loadPeftAdapter, releaseLora } from '../src/train/lora.js';
import { Checkpoint } from '../src/model/safetensors.js';
import type { LogEntry } from '../src/train/logger.js';

const KILLS = 4;

let root: string;
let entry: string;
let gpu: Gpu;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-kill-'));
  entry = buildCli('kill');
  writeTinyModel(join(root, 'model'));
  const dataset = writeTinyDataset(join(root, 'data'), 24);
  for (const out of ['reference', 'killed']) {
    writeFileSync(join(root, `${out}.yaml`), tinyTrainYaml(join(root, 'model'), dataset, join(root, out), { save_steps: 1, num_train_epochs: 2 }));
  }
  gpu = await testGpu();
  // The uninterrupted run both tests compare with.
  const ref = await runCli(entry, ['train', join(root, 'reference.yaml')], root, 120_000);
  if (ref.code !== 0) throw new Error(`reference run failed: ${ref.stderr}`);
}, 300_000);

afterAll(() => {
  gpu?.destroy();
  rmSync(root, { recursive: true, force: true });
});

function adapterOf(dir: string): Map<string, Float32Array> {
  const ckpt = Checkpoint.open(join(dir, 'adapter_model.safetensors'));
  try {
    return new Map([...ckpt.tensors.keys()].map((n) => [n, ckpt.readF32(n)]));
  } finally {
    ckpt.close();
  }
}

const lossesOf = (dir: string) =>
  readFileSync(join(dir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as LogEntry).loss);

/** Every checkpoint-N folder in `dir` is complete: trainer state, optimizer moments and a PEFT adapter that loads. */
function checkCheckpoints(dir: string): number[] {
  const steps: number[] = [];
  for (const name of readdirSync(dir)) {
    const m = /^checkpoint-(\d+)$/.exec(name);
    if (!m) continue;
    const { state, optimizer } = loadCheckpoint(join(dir, name));
    expect(state.global_step, name).toBe(Number(m[1]));
    expect(optimizer.step, name).toBe(state.global_step);
    releaseLora(gpu, loadPeftAdapter(gpu, join(dir, name), TINY_CONFIG));
    steps.push(state.global_step);
  }
  return steps;
}

const logLines = (out: string) => {
  const file = join(out, 'trainer_log.jsonl');
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').length - 1 : 0;
};

/**
 * Start training (resuming when a checkpoint exists) and SIGKILL it: `afterSteps` more logged steps plus `extraMs`
 * later (a moment measured in steps, so that machine speed does not decide whether the kill lands), or as soon as
 * a checkpoint's temporary folder appears.
 */
function trainAndKill(out: string, how: { afterSteps: number; extraMs: number } | { onCheckpointWrite: true }): Promise<NodeJS.Signals | null> {
  const args = ['train', join(root, 'killed.yaml'), '--overwrite_output_dir', 'true'];
  const resume = latestCheckpoint(out);
  if (resume) args.push('--resume_from_checkpoint', 'true');
  // The resumed run rewrites the log with the checkpoint's history first.
  const startLines = resume ? loadCheckpoint(resume).state.log_history.length : 0;
  const child = spawnCli(entry, args, root);
  return new Promise((done) => {
    let watcher: ReturnType<typeof watch> | undefined;
    const kill = () => child.kill('SIGKILL');
    const poll = setInterval(() => {
      if (!existsSync(out)) return;
      if ('afterSteps' in how) {
        if (logLines(out) >= startLines + how.afterSteps) {
          clearInterval(poll);
          setTimeout(kill, how.extraMs);
        }
      } else {
        clearInterval(poll);
        watcher = watch(out, (_event, name) => {
          if (name && /^checkpoint-\d+\.tmp-\d+$/.test(String(name))) kill();
        });
      }
    }, 2);
    child.on('exit', (_code, signal) => {
      clearInterval(poll);
      watcher?.close();
      done(signal);
    });
  });
}

test('SIGKILL at random moments and mid-checkpoint: checkpoints stay valid, resume ends with the uninterrupted adapter', async () => {
  const reference = join(root, 'reference');

  const out = join(root, 'killed');
  const random = rng(2024);
  let killed = 0;
  let staleSeen = 0;
  for (let k = 0; k < KILLS; k++) {
    const signal = await trainAndKill(out, k % 2 === 1 ? { onCheckpointWrite: true } : { afterSteps: 1 + Math.floor(random() * 3), extraMs: random() * 40 });
    if (signal === 'SIGKILL') killed++;
    if (!existsSync(out)) continue;
    staleSeen += readdirSync(out).filter((n) => /\.tmp-\d+$/.test(n)).length;
    checkCheckpoints(out);
    const latest = latestCheckpoint(out);
    if (latest) expect(latest).toMatch(/checkpoint-\d+$/);
  }
  expect(killed, 'runs killed before they finished').toBe(KILLS);
  expect(staleSeen, 'a kill landed while a checkpoint was being written').toBeGreaterThan(0);
  expect(checkCheckpoints(out).length, 'some checkpoint survived the kills').toBeGreaterThan(0);

  const final = await runCli(entry, ['train', join(root, 'killed.yaml'), '--overwrite_output_dir', 'true', '--resume_from_checkpoint', 'true'], root, 120_000);
  expect(final.code, final.stderr).toBe(0);
  expect(readdirSync(out).filter((n) => n.includes('.tmp')), 'stale temporary folders are cleaned up').toEqual([]);
  expect(lossesOf(out)).toEqual(lossesOf(reference));
  const a = adapterOf(reference);
  const b = adapterOf(out);
  expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
  for (const [name, values] of a) expect(b.get(name), name).toEqual(values);
}, 600_000);

test('a lost GPU device stops the run with one message naming the last checkpoint, which resumes', async () => {
  const out = join(root, 'lost');
  const yaml = join(root, 'lost.yaml');
  writeFileSync(yaml, readFileSync(join(root, 'reference.yaml'), 'utf8').replace(join(root, 'reference'), out));
  // The library in its own process: the device is destroyed from the step hook, as a driver reset would lose it.
  const dist = (f: string) => JSON.stringify(pathToFileURL(join(dirname(entry), f)).href);
  const script = join(root, 'lose-device.mjs');
  writeFileSync(script, [
    `import { loadTrainConfig } from ${dist('train/config.js')};`,
    `import { loadModel, runTraining } from ${dist('train/run.js')};`,
    `const { config } = loadTrainConfig([${JSON.stringify(yaml)}]);`,
    'const model = await loadModel(config.model_name_or_path, false);',
    'try {',
    '  await runTraining(config, model, { onStep: (done) => { if (done === 5) model.gpu.device.destroy(); } });',
    "  console.log('finished');",
    '} catch (e) {',
    '  console.log(`${e.name}: ${e.message}`);',
    '}',
    '',
  ].join('\n'));
  const r = await runCli(script, [], root, 120_000);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout.trim().split('\n').at(-1)).toMatch(new RegExp(`^UserError: the GPU device was lost \\(destroyed.*the last checkpoint is ${join(out, 'checkpoint-4')}: resume with resume_from_checkpoint: true$`));
  expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(false);
  checkCheckpoints(out);
  const resumed = await runCli(entry, ['train', yaml, '--resume_from_checkpoint', 'true'], root, 120_000);
  expect(resumed.code, resumed.stderr).toBe(0);
  for (const [name, values] of adapterOf(join(root, 'reference'))) expect(adapterOf(out).get(name), name).toEqual(values);
}, 300_000);
