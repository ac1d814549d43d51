// Resume exactness: a run stopped right after checkpoint-k and resumed from it logs the same losses and ends with
// the same adapter as a run that was never stopped (same schedule: the stop is a crash, not max_steps).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { testGpu, maxAbsDiff } from './helpers.js';
import { tinyTrainYaml, writeTinyDataset, writeTinyModel } from './tiny-model.js';
import type { Gpu } from '../src/gpu/device.js';
import { loadTrainConfig } from '../src/train/config.js';
import { loadModel, runTraining, type LoadedModel } from '../src/train/run.js';
import { releaseLora } from '../src/train/lora.js';
import { Checkpoint } from '../src/model/safetensors.js';
import { releaseModelWeights } from '../src/model/weights.js';
import type { LogEntry } from '../src/train/logger.js';

const SAVE_STEPS = 2;

let root: string;
let gpu: Gpu;
let model: LoadedModel;
let dataset: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-resume-'));
  writeTinyModel(join(root, 'model'));
  dataset = writeTinyDataset(join(root, 'data'), 14);
  gpu = await testGpu();
  model = await loadModel(join(root, 'model'), false, gpu);
});

afterAll(() => {
  if (model) releaseModelWeights(gpu, model.weights);
  gpu?.destroy();
  rmSync(root, { recursive: true, force: true });
});

class Crash extends Error {}

/** Train with `extra` keys; `crashAtStep` throws from the step hook once that step has run (before it is logged). */
async function train(outputDir: string, extra: Record<string, unknown>, crashAtStep?: number): Promise<void> {
  const yaml = join(root, `${outputDir.replaceAll('/', '_')}.yaml`);
  writeFileSync(yaml, tinyTrainYaml(join(root, 'model'), dataset, join(root, outputDir), { save_steps: SAVE_STEPS, num_train_epochs: 2, ...extra }));
  const { config } = loadTrainConfig([yaml]);
  const result = await runTraining(config, model, {
    onStep: (done) => {
      if (done === crashAtStep) throw new Crash(`stopped at step ${done}`);
    },
  });
  releaseLora(gpu, result.lora);
}

function logOf(dir: string): LogEntry[] {
  return readFileSync(join(root, dir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogEntry);
}

function adapterOf(dir: string): Map<string, Float32Array> {
  const ckpt = Checkpoint.open(join(root, dir, 'adapter_model.safetensors'));
  try {
    return new Map([...ckpt.tensors.keys()].map((n) => [n, ckpt.readF32(n)]));
  } finally {
    ckpt.close();
  }
}

/** Everything a log entry says about the training, without the wall-clock throughput. */
const trainingFields = (e: LogEntry) => ({ ...e, tokens_per_second: 0 });

describe('resume_from_checkpoint', () => {
  test.each([
    ['gradient accumulation 1', { gradient_accumulation_steps: 1 }],
    ['gradient accumulation 2, warmup, linear decay', { gradient_accumulation_steps: 2, warmup_steps: 2, lr_scheduler_type: 'linear', per_device_train_batch_size: 1 }],
    // The masks are a function of the global micro-batch index, so the resumed steps draw the same ones.
    ['gradient accumulation 2, lora_dropout 0.25', { gradient_accumulation_steps: 2, per_device_train_batch_size: 1, lora_dropout: 0.25 }],
    // Preference stages log their rewards too; a checkpoint restores them like the loss.
    ['stage dpo', { stage: 'dpo', dataset: 'demo_dpo', dataset_dir: resolve(import.meta.dirname, '../data'), max_samples: 6 }],
  ] as [string, Record<string, unknown>][])('a run stopped after checkpoint-4, resumed from the latest, equals the uninterrupted run (%s)', async (_name, extra) => {
    const tag = Object.values(extra).join('-').replace(/[^\w.-]+/g, '_');
    await train(`full-${tag}`, extra);
    const full = logOf(`full-${tag}`);
    expect(full.length).toBeGreaterThan(2 * SAVE_STEPS);

    const stopped = `stopped-${tag}`;
    await expect(train(stopped, extra, 2 * SAVE_STEPS + 1)).rejects.toThrow(Crash);
    expect(() => readFileSync(join(root, stopped, 'adapter_model.safetensors'))).toThrow();
    // A YAML boolean `true` is refused by config.ts's string parser today; the quoted form means the latest.
    await train(stopped, { ...extra, resume_from_checkpoint: 'true' });

    const resumed = logOf(stopped);
    expect(resumed.map(trainingFields)).toEqual(full.map(trainingFields));
    const a = adapterOf(`full-${tag}`);
    const b = adapterOf(stopped);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [name, values] of a) expect(maxAbsDiff(b.get(name)!, values), name).toBe(0);
    const saved = JSON.parse(readFileSync(join(root, stopped, 'adapter_config.json'), 'utf8')) as { lora_dropout: number };
    expect(saved.lora_dropout).toBe(extra.lora_dropout ?? 0);
  });

  test('an explicit checkpoint folder resumes from that step', async () => {
    await train('explicit', {});
    const full = logOf('explicit');
    await train('explicit', { resume_from_checkpoint: join(root, 'explicit', `checkpoint-${SAVE_STEPS}`) });
    expect(logOf('explicit').map(trainingFields)).toEqual(full.map(trainingFields));
  });
});

describe('evaluation on the val_size split', () => {
  test('eval_strategy epoch logs an eval loss at each epoch end, with the eval batch size', async () => {
    // 14 samples, val_size 4 → 10 train rows, batch 2 → 5 steps per epoch; 2 epochs; logging every 3 steps.
    await train('eval', { val_size: 4, eval_strategy: 'epoch', per_device_eval_batch_size: 3, logging_steps: 3, save_steps: 1000 });
    const log = logOf('eval');
    expect(log.filter((e) => e.eval_loss !== undefined).map((e) => e.current_steps)).toEqual([5, 10]);
    expect(log.map((e) => e.current_steps)).toEqual([3, 5, 6, 9, 10]);
    const evals = log.filter((x) => x.eval_loss !== undefined).map((e) => e.eval_loss!);
    for (const v of evals) expect(Number.isFinite(v) && v > 0).toBe(true);
    // The two evaluations see different adapters.
    expect(evals[0]).not.toBe(evals[1]);
  });
});
