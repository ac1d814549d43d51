// Stages dpo and kto through the CLI's job (runTraining) on the tiny random model with our demo data
// (data/demo_dpo.json, data/demo_kto.json): the chosen reward pulls away from the rejected one, LLaMA-Factory's
// metrics reach trainer_log.jsonl and the rewards plot, and every pref_loss trains.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { testGpu } from './helpers.js';
import { tinyTrainYaml, writeTinyModel } from './tiny-model.js';
import type { Gpu } from '../src/gpu/device.js';
import { loadTrainConfig } from '../src/train/config.js';
import { loadModel, microBatch, prepareData, runTraining, type LoadedModel } from '../src/train/run.js';
import { initLora, releaseLora } from '../src/train/lora.js';
import { LoraTrainer } from '../src/train/trainer.js';
import { releaseModelWeights } from '../src/model/weights.js';
import type { LogEntry } from '../src/train/logger.js';

const DATA = resolve(import.meta.dirname, '../data');

let root: string;
let gpu: Gpu;
let model: LoadedModel;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-preference-'));
  writeTinyModel(join(root, 'model'));
  gpu = await testGpu();
  model = await loadModel(join(root, 'model'), false, gpu);
});

afterAll(async () => {
  if (model) releaseModelWeights(gpu, model.weights);
  await gpu?.destroy();
  rmSync(root, { recursive: true, force: true });
});

async function train(name: string, extra: Record<string, unknown>): Promise<LogEntry[]> {
  const yaml = join(root, `${name}.yaml`);
  writeFileSync(yaml, tinyTrainYaml(join(root, 'model'), 'unset', join(root, name), { dataset_dir: DATA, cutoff_len: 48, per_device_train_batch_size: 4, learning_rate: 5e-3, ...extra }));
  const { config } = loadTrainConfig([yaml]);
  const result = await runTraining(config, model);
  releaseLora(gpu, result.lora);
  return readFileSync(join(root, name, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogEntry);
}

describe('stage dpo and kto on the demo data', () => {
  test('dpo (sigmoid): the chosen reward pulls away from the rejected one', async () => {
    // 16 pairs, 4 per step, 3 epochs: 12 steps, logged every 3.
    const log = await train('dpo', { stage: 'dpo', dataset: 'demo_dpo', num_train_epochs: 3, logging_steps: 3, plot_loss: true });
    expect(log.map((e) => e.current_steps)).toEqual([3, 6, 9, 12]);
    for (const e of log) {
      for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins', 'logps/chosen', 'logps/rejected'] as const) expect(Number.isFinite(e[k]), k).toBe(true);
      expect(e['rewards/margins']).toBeCloseTo(e['rewards/chosen'] - e['rewards/rejected'], 5);
    }
    const first = log[0]!, last = log.at(-1)!;
    expect(last['rewards/margins']).toBeGreaterThan(first['rewards/margins'] + 0.1);
    expect(last['rewards/accuracies']).toBeGreaterThanOrEqual(0.75);
    expect(last.loss).toBeLessThan(first.loss);
    const svg = readFileSync(join(root, 'dpo', 'training_rewards.svg'), 'utf8');
    expect(svg).toContain('— margin');
    expect(svg.match(/<polyline/g)?.length).toBe(3);
  });

  test('kto: desirable rewards pull away from undesirable ones; the KL estimate is logged', async () => {
    const log = await train('kto', { stage: 'kto', dataset: 'demo_kto', num_train_epochs: 3, logging_steps: 3 });
    for (const e of log) {
      expect(e.kl! >= 0 && Number.isFinite(e.kl)).toBe(true);
      expect(e['rewards/accuracies']).toBeUndefined();
    }
    expect(log.at(-1)!['rewards/margins']).toBeGreaterThan(log[0]!['rewards/margins'] + 0.1);
    expect(existsSync(join(root, 'kto', 'adapter_model.safetensors'))).toBe(true);
  });

  test.each(['hinge', 'ipo', 'orpo', 'simpo'])('pref_loss %s trains (rewards as LLaMA-Factory defines them)', async (loss) => {
    const beta = 0.2;
    const log = await train(`dpo-${loss}`, { stage: 'dpo', dataset: 'demo_dpo', pref_loss: loss, pref_beta: beta, pref_ftx: 0.5, max_steps: 2, logging_steps: 1 });
    expect(log).toHaveLength(2);
    for (const e of log) {
      expect(Number.isFinite(e.loss) && Number.isFinite(e.grad_norm) && e.grad_norm > 0).toBe(true);
      // ipo, orpo and simpo compare per-token means (about −log 512 on the random model), hinge sums.
      if (loss === 'hinge') expect(e['logps/chosen']).toBeLessThan(-10);
      else expect(e['logps/chosen'] < 0 && e['logps/chosen'] > -10).toBe(true);
      // orpo and simpo have no reference: rewards are β times the policy's means.
      if (loss === 'orpo' || loss === 'simpo') expect(e['rewards/chosen']).toBeCloseTo(beta * e['logps/chosen'], 5);
    }
  });
});

describe('evaluation (val_size, eval_dataset) in the preference stages', () => {
  test('the eval loss of a batch is the loss the training step computes on it', async () => {
    const yaml = join(root, 'eval-direct.yaml');
    writeFileSync(yaml, tinyTrainYaml(join(root, 'model'), 'demo_dpo', join(root, 'eval-direct'), { stage: 'dpo', dataset_dir: DATA, cutoff_len: 48 }));
    const { config: cfg } = loadTrainConfig([yaml]);
    const data = prepareData(cfg, model.tokenizer, model.config);
    const lora = initLora(gpu, model.config, { rank: 4, alpha: 8, rslora: false, dropout: 0, targets: cfg.lora_target }, 1);
    const trainer = new LoraTrainer(gpu, model.config, model.weights, lora, {
      B: 4, T: data.T, recompute: true, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 },
      preference: { kind: 'sigmoid', beta: 0.5, ftx: 0.2, gamma: 0, chosenWeight: 1, rejectedWeight: 1 },
    });
    try {
      const batch = microBatch(data, 2, 1, 0);
      // One step moves the adapter away from the reference (a zero B would make every DPO loss log 2).
      trainer.step([batch], 1, 2e-2);
      await trainer.readMeanLoss();
      const evaluated = await trainer.evaluate([batch, batch], 4);
      trainer.accumulateGradients([batch], 2);
      const trained = await trainer.readMeanLoss();
      expect(Math.abs(trained - Math.log(2))).toBeGreaterThan(1e-4);
      expect(evaluated).toBeCloseTo(trained, 6);
    } finally {
      trainer.destroy();
      releaseLora(gpu, lora);
    }
  });

  test('val_size with eval_strategy epoch logs an eval loss at each epoch end (kto)', async () => {
    // 16 examples, 4 held out, batch 4: 3 steps per epoch, 2 epochs.
    const log = await train('kto-eval', { stage: 'kto', dataset: 'demo_kto', val_size: 4, eval_strategy: 'epoch', per_device_eval_batch_size: 3, num_train_epochs: 2, logging_steps: 1 });
    expect(log.filter((e) => e.eval_loss !== undefined).map((e) => e.current_steps)).toEqual([3, 6]);
    for (const e of log.filter((x) => x.eval_loss !== undefined)) expect(e.eval_loss! > 0 && e.eval_loss! < 2).toBe(true);
  });
});

describe("the examples (LLaMA-Factory's Qwen3 DPO and KTO YAMLs)", () => {
  test.each([['dpo', 'demo_dpo'], ['kto', 'demo_kto']])('examples/qwen3-lora-%s.yaml runs with the model and data overridden', async (stage, dataset) => {
    const out = join(root, `example-${stage}`);
    const { config, warnings } = loadTrainConfig([
      resolve(import.meta.dirname, `../examples/qwen3-lora-${stage}.yaml`), '--model_name_or_path', join(root, 'model'), '--dataset', dataset,
      '--dataset_dir', DATA, '--cutoff_len', '48', '--max_steps', '2', '--gradient_accumulation_steps', '2', '--bf16', 'false', '--output_dir', out,
      '--logging_steps', '1',
    ]);
    expect(config.stage).toBe(stage);
    expect(warnings.join('\n')).not.toMatch(/unknown/);
    const result = await runTraining(config, model);
    releaseLora(gpu, result.lora);
    expect(result.log).toHaveLength(2);
    for (const e of result.log) expect(Number.isFinite(e['rewards/margins']) && Number.isFinite(e.loss)).toBe(true);
    expect(existsSync(join(out, 'adapter_model.safetensors')) && existsSync(join(out, 'training_rewards.svg'))).toBe(true);
  });
});
