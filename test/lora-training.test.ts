// LoraTrainer end to end on a tiny random Qwen3: the loss of a small fixed dataset falls to less than half within a
// few hundred steps, and gradient accumulation over micro-batches equals one batch holding all of them.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { loadModelConfig, type ModelConfig } from '../src/model/config.js';
import { Checkpoint } from '../src/model/safetensors.js';
import { loadModelWeights, releaseModelWeights, type ModelWeights } from '../src/model/weights.js';
import { plainBatch, shiftLabels } from '../src/model/qwen3.js';
import { initLora, readLoraTensors, releaseLora, writeLoraTensors, type LoraSettings } from '../src/train/lora.js';
import { PROJECTIONS } from '../src/model/family.js';
import { LoraTrainer, type StepBatch } from '../src/train/trainer.js';
import type { AdamWHyper } from '../src/kernels/adamw.js';
import { maxAbsDiff, maxRelDiff, testGpu } from './helpers.js';
import { randomQwen3Tensors, randomRefLora, writeQwen3Folder } from './model-reference.js';

const CONFIG: ModelConfig = {
  modelType: 'qwen3', vocabSize: 64, hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8,
  rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 64, tieWordEmbeddings: true, bosTokenId: null, eosTokenId: null,
};
const SETTINGS: LoraSettings = { rank: 8, alpha: 16, rslora: false, dropout: 0, targets: [...PROJECTIONS] };
const HYPER: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };
const SEQUENCES = 8;
const T = 16;

/** Sequence s counts up from 5s in steps of s+1 (mod vocab): learnable from the previous two tokens. */
function sequence(s: number): number[] {
  return Array.from({ length: T }, (_, i) => (5 * s + i * (s + 1)) % CONFIG.vocabSize);
}

/** One batch of the given sequences, every next token counted. */
function batchOf(seqs: number[][]): StepBatch {
  const ids = seqs.flat();
  const b = plainBatch(ids, seqs.length, T, shiftLabels(ids, seqs.length, T));
  return { ...b, targets: b.targets! };
}

let gpu: Gpu;
let tmp: string;
let weights: ModelWeights;
beforeAll(async () => {
  gpu = await testGpu();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'loraforge-train-'));
  // O(1) logits: a 0.02-std init bounds them below 1, and then no adapter can bring the loss down by half.
  writeQwen3Folder(tmp, CONFIG, randomQwen3Tensors(CONFIG, 3));
  const ckpt = Checkpoint.open(tmp);
  weights = loadModelWeights(gpu, ckpt, loadModelConfig(tmp), 'f32');
  ckpt.close();
});
afterAll(() => {
  if (weights) releaseModelWeights(gpu, weights);
  gpu?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

it('training a tiny model for 200 steps on a small dataset halves its loss', async () => {
  const data = Array.from({ length: SEQUENCES }, (_, s) => sequence(s));
  const micro = [batchOf(data)];
  const lora = initLora(gpu, CONFIG, SETTINGS, 1);
  const trainer = new LoraTrainer(gpu, CONFIG, weights, lora, { B: SEQUENCES, T, recompute: false, hyper: HYPER });
  try {
    const initial = await trainer.evaluate(micro);
    // An untrained model knows nothing of the data: its loss starts about ln(vocab) or above.
    expect(initial).toBeGreaterThan(0.8 * Math.log(CONFIG.vocabSize));
    const steps = 200;
    let firstLogged = NaN;
    for (let t = 1; t <= steps; t++) {
      trainer.step(micro, t, 1e-2);
      if (t === 10) firstLogged = await trainer.readMeanLoss();
    }
    const lastLogged = await trainer.readMeanLoss();
    const final = await trainer.evaluate(micro);
    console.log(`loss: initial ${initial.toFixed(4)}, mean of steps 1-10 ${firstLogged.toFixed(4)}, mean of steps 11-${steps} ${lastLogged.toFixed(4)}, final ${final.toFixed(4)}`);
    expect(final).toBeLessThan(0.5 * initial);
    // The logged training loss reports the same decrease.
    expect(lastLogged).toBeLessThan(firstLogged);
    expect(firstLogged).toBeLessThanOrEqual(initial + 1e-3);
  } finally {
    trainer.destroy();
    releaseLora(gpu, lora);
  }
});

it('two accumulated micro-batches give the same loss, gradients and updates as one batch of both', async () => {
  const data = Array.from({ length: 2 }, (_, s) => sequence(s + 3));
  // Cut part of the second sequence's targets so that the micro-batches count different token numbers.
  const second = batchOf([data[1]!]);
  second.targets.fill(-100, 0, 6);
  const both = batchOf(data);
  both.targets.fill(-100, T, T + 6);
  // Non-zero B, so that every A gets a gradient too.
  const start = randomRefLora(CONFIG, SETTINGS, 4, 0.1).tensors;
  const LR = 1e-4;
  const run = async (B: number, micro: StepBatch[]) => {
    const lora = initLora(gpu, CONFIG, SETTINGS, 0);
    writeLoraTensors(gpu, lora, start, 'weights');
    const trainer = new LoraTrainer(gpu, CONFIG, weights, lora, { B, T, recompute: false, hyper: HYPER });
    try {
      // Adam's first steps move each element by about lr whatever its gradient's size, so an element with a
      // gradient near f32 noise may move differently in the two runs by up to ~lr·eps/|g|: a small lr bounds that.
      for (const t of [1, 2]) trainer.step(micro, t, LR);
      return { loss: await trainer.readMeanLoss(), grads: await readLoraTensors(gpu, lora, 'grads'), params: await readLoraTensors(gpu, lora, 'weights') };
    } finally {
      trainer.destroy();
      releaseLora(gpu, lora);
    }
  };
  const accumulated = await run(1, [batchOf([data[0]!]), second]);
  const single = await run(2, [both]);
  expect(Math.abs(accumulated.loss - single.loss)).toBeLessThanOrEqual(1e-6);
  for (const [name, g] of single.grads) {
    expect(maxRelDiff(accumulated.grads.get(name)!, g), name).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(accumulated.params.get(name)!, single.params.get(name)!), name).toBeLessThanOrEqual(1e-6);
    // The steps moved the parameters (by about lr per element and step).
    expect(maxAbsDiff(single.params.get(name)!, start.get(name)!), name).toBeGreaterThan(LR);
  }
});
