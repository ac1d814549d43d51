// Soak: many training steps of a tiny model, sampling live GPU bytes and the JS heap every few steps. After warm-up
// the GPU bytes must not move at all (nothing is allocated per step) and the heap must stay within a small bound.
// LORAFORGE_SOAK_STEPS=5000 npx vitest run test/soak.test.ts runs a longer soak; the default 200 steps take ~40 s on
// lavapipe (not asserted: parallel test files share the CPU).
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { testGpu } from './helpers.js';
import { tinyTrainYaml, writeTinyDataset, writeTinyModel } from './tiny-model.js';
import type { Gpu } from '../src/gpu/device.js';
import { loadTrainConfig } from '../src/train/config.js';
import { loadModel, runTraining, type LoadedModel } from '../src/train/run.js';
import { releaseLora } from '../src/train/lora.js';
import { releaseModelWeights } from '../src/model/weights.js';

const STEPS = Number(process.env.LORAFORGE_SOAK_STEPS ?? 200);
const SAMPLE_EVERY = 10;
const WARMUP_STEPS = 20;
/** Heap growth allowed after warm-up: the log history grows by a few hundred bytes per logged step. */
const HEAP_SLACK_BYTES = 2 * 1024 * 1024 + STEPS * 400;

/** A full collection, exposing gc() when node was started without --expose-gc. */
function collectGarbage(): void {
  let gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

let root: string;
let gpu: Gpu;
let model: LoadedModel;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-soak-'));
  writeTinyModel(join(root, 'model'));
  gpu = await testGpu();
  model = await loadModel(join(root, 'model'), false, gpu);
});

afterAll(() => {
  if (model) releaseModelWeights(gpu, model.weights);
  gpu?.destroy();
  rmSync(root, { recursive: true, force: true });
});

test(`${STEPS} steps: GPU bytes constant, heap flat`, async () => {
  const dataset = writeTinyDataset(join(root, 'data'), 8);
  const yaml = join(root, 'soak.yaml');
  writeFileSync(yaml, tinyTrainYaml(join(root, 'model'), dataset, join(root, 'out'), {
    max_steps: STEPS, logging_steps: 5, save_steps: 50, lr_scheduler_type: 'constant', learning_rate: 1e-3, cutoff_len: 16,
  }));
  const { config } = loadTrainConfig([yaml]);
  const samples: { step: number; gpuBytes: number; heap: number }[] = [];
  const started = performance.now();
  const result = await runTraining(config, model, {
    onStep: (done) => {
      if (done % SAMPLE_EVERY !== 0) return;
      collectGarbage();
      samples.push({ step: done, gpuBytes: gpu.liveBytes, heap: process.memoryUsage().heapUsed });
    },
  });
  const seconds = (performance.now() - started) / 1000;
  releaseLora(gpu, result.lora);

  expect(result.steps).toBe(STEPS);
  expect(Number.isFinite(result.finalLoss)).toBe(true);
  const settled = samples.filter((s) => s.step >= WARMUP_STEPS);
  expect(settled.length).toBeGreaterThan(3);
  expect(new Set(settled.map((s) => s.gpuBytes)), 'live GPU bytes after warm-up').toEqual(new Set([settled[0]!.gpuBytes]));
  const heapGrowth = Math.max(...settled.map((s) => s.heap)) - settled[0]!.heap;
  expect(heapGrowth, `heap grew ${heapGrowth} bytes over ${STEPS} steps (${seconds.toFixed(1)} s)`).toBeLessThan(HEAP_SLACK_BYTES);
}, 3_600_000);
