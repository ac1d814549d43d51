// The whole Qwen3 graph on odd shapes (not the fixtures): logits, loss and LoRA gradients against the plain-TS
// reference built from the kernel references, bf16 weights, packed batches against separate samples, and
// gradient checkpointing against keeping every activation, LoRA dropout against the reference with the same masks.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import type { WeightDType } from '../src/gpu/matrix.js';
import { loadModelConfig, type ModelConfig } from '../src/model/config.js';
import { Checkpoint } from '../src/model/safetensors.js';
import { loadModelWeights, releaseModelWeights, type ModelWeights } from '../src/model/weights.js';
import { modelTensorShapes } from '../src/model/families.js';
import { writeRandomModel } from '../src/model/random-model.js';
import { loraDropoutSalt, plainBatch, Qwen3Graph, shiftLabels, type GraphBatch } from '../src/model/qwen3.js';
import { dropoutRef } from '../src/kernels/dropout.js';
import { sequenceLogprobRef } from '../src/kernels/sequence-logprob.js';
import { SequenceLogprobHead } from '../src/model/heads.js';
import { initLora, readLoraTensors, releaseLora, writeLoraTensors, type LoraSettings, type LoraWeights } from '../src/train/lora.js';
import { PROJECTIONS } from '../src/model/family.js';
import { seededRandom } from '../src/random.js';
import { maxAbsDiff, maxRelDiff, testGpu } from './helpers.js';
import { qwen3ForwardRef, qwen3LossRef, randomQwen3Tensors, randomRefLora, roundMatricesToBf16, writeQwen3Folder, type LoraInputRef, type RefBatch, type RefLora, type RefTensors } from './model-reference.js';

function config(o: Partial<ModelConfig>): ModelConfig {
  return {
    modelType: 'qwen3', vocabSize: 97, hiddenSize: 40, intermediateSize: 72, numLayers: 2, numHeads: 5, numKvHeads: 1, headDim: 12,
    rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 128, tieWordEmbeddings: false, bosTokenId: null, eosTokenId: null,
    ...o,
  };
}

const MODELS: { name: string; config: ModelConfig; lora: LoraSettings }[] = [
  { name: 'untied, 5 heads / 1 kv head, head_dim 12', config: config({}), lora: { rank: 3, alpha: 5, rslora: false, dropout: 0, targets: [...PROJECTIONS] } },
  {
    name: 'tied, 4 heads / 4 kv heads, head_dim 8',
    config: config({ vocabSize: 61, hiddenSize: 24, intermediateSize: 38, numHeads: 4, numKvHeads: 4, headDim: 8, ropeTheta: 1e6, tieWordEmbeddings: true }),
    lora: { rank: 2, alpha: 3, rslora: true, dropout: 0, targets: [...PROJECTIONS] },
  },
  // Qwen2.5's recipe: q/k/v biases, no Q/K norm.
  {
    name: 'qwen2, untied, 6 heads / 2 kv heads, head_dim 10',
    config: config({ modelType: 'qwen2', vocabSize: 89, hiddenSize: 60, intermediateSize: 70, numHeads: 6, numKvHeads: 2, headDim: 10, ropeTheta: 1e6 }),
    lora: { rank: 3, alpha: 6, rslora: false, dropout: 0, targets: [...PROJECTIONS] },
  },
  {
    name: 'qwen2, tied, 3 heads / 3 kv heads, head_dim 14',
    config: config({ modelType: 'qwen2', vocabSize: 53, hiddenSize: 42, intermediateSize: 50, numHeads: 3, numKvHeads: 3, headDim: 14, tieWordEmbeddings: true }),
    lora: { rank: 2, alpha: 3, rslora: true, dropout: 0, targets: [...PROJECTIONS] },
  },
];

const B = 2;
const T = 11;

let gpu: Gpu;
let tmp: string;
beforeAll(async () => {
  gpu = await testGpu();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'loraforge-shapes-'));
});
afterAll(() => {
  gpu?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Write the tensors as an HF folder and load it the way the CLI does. */
function loadOnGpu(name: string, c: ModelConfig, tensors: RefTensors, dtype: WeightDType): ModelWeights {
  const dir = path.join(tmp, name);
  writeQwen3Folder(dir, c, tensors);
  const ckpt = Checkpoint.open(dir);
  try {
    return loadModelWeights(gpu, ckpt, loadModelConfig(dir), dtype);
  } finally {
    ckpt.close();
  }
}

function loraOnGpu(c: ModelConfig, ref: RefLora): LoraWeights {
  const lora = initLora(gpu, c, ref.settings, 0);
  writeLoraTensors(gpu, lora, ref.tensors, 'weights');
  return lora;
}

/** Random ids and labels for B rows of T, about a quarter of the labels ignored. */
function randomBatch(c: ModelConfig, seed: number): RefBatch {
  const next = seededRandom(seed);
  const ids = Uint32Array.from({ length: B * T }, () => Math.floor(next() * c.vocabSize));
  const labels = Array.from({ length: B * T }, () => (next() < 0.25 ? -100 : Math.floor(next() * c.vocabSize)));
  const g = plainBatch(ids, B, T, shiftLabels(labels, B, T));
  return { B, T, ids, positions: g.positions, segments: g.segments, targets: g.targets! };
}

function graphBatch(b: RefBatch): GraphBatch {
  return { inputIds: b.ids, positions: b.positions, segments: b.segments, targets: b.targets };
}

async function gpuLogits(c: ModelConfig, w: ModelWeights, lora: LoraWeights | undefined, b: RefBatch): Promise<Float32Array> {
  const g = new Qwen3Graph(gpu, c, w, { B: b.B, T: b.T, mode: 'logits', lora });
  try {
    g.setBatch(graphBatch(b));
    g.program.run();
    return await gpu.readF32(g.logits!, b.B * b.T * c.vocabSize);
  } finally {
    g.destroy();
  }
}

async function gpuLoss(c: ModelConfig, w: ModelWeights, lora: LoraWeights | undefined, b: RefBatch): Promise<number> {
  const g = new Qwen3Graph(gpu, c, w, { B: b.B, T: b.T, mode: 'loss', lora });
  try {
    g.setBatch(graphBatch(b));
    g.program.run();
    return await g.readLoss();
  } finally {
    g.destroy();
  }
}

/** Activations kept (false), recomputed (true), or recomputed with each layer's attention output and lse kept. */
type Recompute = boolean | 'keep-attention';

/** LoRA gradients of the batch's mean loss, by PEFT name. */
async function gpuGrads(c: ModelConfig, w: ModelWeights, lora: LoraWeights, b: RefBatch, recompute: Recompute): Promise<Map<string, Float32Array>> {
  return (await gpuTrain(c, w, lora, b, recompute)).grads;
}

/** One training pass: its loss and LoRA gradients; with lora dropout, the masks of (seed, microBatch). */
async function gpuTrain(c: ModelConfig, w: ModelWeights, lora: LoraWeights, b: RefBatch, recompute: Recompute, seed = 0, microBatch = 0): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const g = new Qwen3Graph(gpu, c, w, { B: b.B, T: b.T, mode: 'train', lora, recompute: recompute !== false, keepAttention: recompute === 'keep-attention' });
  try {
    g.setBatch(graphBatch(b));
    g.setDropoutStep(seed, microBatch);
    g.zeroGrads.run();
    g.program.run();
    return { loss: await g.readLoss(), grads: await readLoraTensors(gpu, lora, 'grads') };
  } finally {
    g.destroy();
  }
}

/**
 * Check the largest and two random elements of every gradient against a fourth-order central difference of
 * `loss` (which reads refLora's values) with an exact power-of-two step; returns how many were checked. The step
 * 2^-9 keeps the formula's truncation error under the tolerance where the loss curves fast (Qwen2's attention
 * logits grow with q unbounded; with 2^-7 some random draws of Qwen3 weights fail on truncation alone).
 */
function expectFiniteDifferences(grads: Map<string, Float32Array>, refLora: RefLora, loss: () => number, seed: number, stepLog2 = 9): number {
  const step = 2 ** -stepLog2;
  const next = seededRandom(seed);
  let checked = 0;
  for (const [tensor, grad] of grads) {
    let scale = 0;
    let largest = 0;
    grad.forEach((g, i) => { if (Math.abs(g) > scale) { scale = Math.abs(g); largest = i; } });
    expect(scale, tensor).toBeGreaterThan(0);
    const values = refLora.tensors.get(tensor)!;
    for (const i of [largest, Math.floor(next() * grad.length), Math.floor(next() * grad.length)]) {
      const x = values[i]!;
      const at = (d: number) => { values[i] = x + d * step; return loss(); };
      const fd = (8 * (at(1) - at(-1)) - (at(2) - at(-2))) / (12 * step);
      values[i] = x;
      expect(Math.abs(grad[i]! - fd), `${tensor}[${i}]: gpu ${grad[i]} vs finite difference ${fd}`).toBeLessThanOrEqual(1e-3 * scale);
      checked++;
    }
  }
  return checked;
}

/** Logits rows of token range [from, to) of a [N, V] array. */
function rows(logits: Float32Array, V: number, from: number, to: number): Float32Array {
  return logits.subarray(from * V, to * V);
}

describe.each(MODELS)('graph: $name', ({ name, config: c, lora: settings }) => {
  const tensors = randomQwen3Tensors(c, 11);
  const refLora = randomRefLora(c, settings, 12);
  const batch = randomBatch(c, 13);
  let weights: ModelWeights;
  let lora: LoraWeights;
  beforeAll(() => {
    weights = loadOnGpu(name.replace(/\W+/g, '-'), c, tensors, 'f32');
    lora = loraOnGpu(c, refLora);
  });
  afterAll(() => {
    releaseLora(gpu, lora);
    releaseModelWeights(gpu, weights);
  });

  it('f32 logits and loss equal the reference', async () => {
    const ref = qwen3ForwardRef(c, tensors, undefined, batch);
    expect(maxAbsDiff(await gpuLogits(c, weights, undefined, batch), ref.logits)).toBeLessThanOrEqual(1e-4);
    expect(Math.abs((await gpuLoss(c, weights, undefined, batch)) - qwen3LossRef(c, tensors, undefined, batch))).toBeLessThanOrEqual(1e-5);
  });

  it('with a random LoRA (non-zero B), logits and loss equal the reference', async () => {
    const ref = qwen3ForwardRef(c, tensors, refLora, batch);
    const base = qwen3ForwardRef(c, tensors, undefined, batch);
    // The adapter must matter far beyond the tolerance, or this test would prove nothing.
    expect(maxAbsDiff(ref.logits, base.logits)).toBeGreaterThan(0.1);
    expect(maxAbsDiff(await gpuLogits(c, weights, lora, batch), ref.logits)).toBeLessThanOrEqual(1e-4);
    expect(Math.abs((await gpuLoss(c, weights, lora, batch)) - qwen3LossRef(c, tensors, refLora, batch))).toBeLessThanOrEqual(1e-5);
  });

  it('bf16 weights equal the reference on bf16-rounded weights', async () => {
    const bf16 = loadOnGpu(`${name.replace(/\W+/g, '-')}-bf16`, c, tensors, 'bf16');
    try {
      const rounded = roundMatricesToBf16(c, tensors);
      const ref = qwen3ForwardRef(c, rounded, refLora, batch);
      // Rounding must change the logits visibly, so that a bf16 path that read f32 values would fail.
      expect(maxAbsDiff(ref.logits, qwen3ForwardRef(c, tensors, refLora, batch).logits)).toBeGreaterThan(1e-3);
      expect(maxAbsDiff(await gpuLogits(c, bf16, lora, batch), ref.logits)).toBeLessThanOrEqual(1e-4);
      expect(Math.abs((await gpuLoss(c, bf16, lora, batch)) - qwen3LossRef(c, rounded, refLora, batch))).toBeLessThanOrEqual(1e-5);
    } finally {
      releaseModelWeights(gpu, bf16);
    }
  });

  it('a neat-packed batch (positions restart, segment ids, padding) equals the samples run separately', async () => {
    // Row 0 packs samples of 4 and 7 tokens; row 1 packs 5, 3 and 2 tokens and one padding token.
    const layout = [[4, 7], [5, 3, 2]];
    const next = seededRandom(14);
    const samples: { row: number; start: number; ids: number[]; labels: number[] }[] = [];
    const packed: RefBatch = { B, T, ids: new Uint32Array(B * T), positions: new Uint32Array(B * T), segments: new Uint32Array(B * T), targets: new Int32Array(B * T).fill(-100) };
    layout.forEach((lengths, row) => {
      let start = 0;
      lengths.forEach((len, s) => {
        const ids = Array.from({ length: len }, () => Math.floor(next() * c.vocabSize));
        const labels = ids.map((id, i) => (i === 0 ? -100 : id));
        for (let i = 0; i < len; i++) {
          const n = row * T + start + i;
          packed.ids[n] = ids[i]!;
          packed.positions[n] = i;
          packed.segments[n] = s + 1;
          if (i + 1 < len) packed.targets[n] = labels[i + 1]!;
        }
        samples.push({ row, start, ids, labels });
        start += len;
      });
    });
    const packedLogits = await gpuLogits(c, weights, lora, packed);
    expect(maxAbsDiff(packedLogits, qwen3ForwardRef(c, tensors, refLora, packed).logits)).toBeLessThanOrEqual(1e-4);

    let weightedLoss = 0;
    let counted = 0;
    const V = c.vocabSize;
    for (const s of samples) {
      const len = s.ids.length;
      const g = plainBatch(s.ids, 1, len, shiftLabels(s.labels, 1, len));
      const alone: RefBatch = { B: 1, T: len, ids: g.inputIds, positions: g.positions, segments: g.segments, targets: g.targets! };
      const from = s.row * T + s.start;
      expect(maxAbsDiff(rows(packedLogits, V, from, from + len), await gpuLogits(c, weights, lora, alone))).toBeLessThanOrEqual(1e-5);
      const n = len - 1;
      weightedLoss += (await gpuLoss(c, weights, lora, alone)) * n;
      counted += n;
    }
    expect(Math.abs((await gpuLoss(c, weights, lora, packed)) - weightedLoss / counted)).toBeLessThanOrEqual(1e-5);

    // Gradients: the packed batch equals the samples accumulated with the packed batch's 1/count.
    const packedGrads = await gpuGrads(c, weights, lora, packed, false);
    for (const g of lora.grads) gpu.write(g.buffer, new Float32Array(g.count));
    for (const s of samples) {
      const len = s.ids.length;
      const g = new Qwen3Graph(gpu, c, weights, { B: 1, T: len, mode: 'train', lora });
      g.setBatch(plainBatch(s.ids, 1, len, shiftLabels(s.labels, 1, len)), 1 / counted);
      g.program.run();
      g.destroy();
    }
    for (const [tensor, grad] of await readLoraTensors(gpu, lora, 'grads')) {
      expect(maxRelDiff(grad, packedGrads.get(tensor)!), tensor).toBeLessThanOrEqual(1e-4);
    }
  });

  it('LoRA gradients (recompute on, with and without attention kept, and off) equal finite differences of the reference loss', async () => {
    const kept = await gpuGrads(c, weights, lora, batch, false);
    // Recomputing a layer's forward runs the same kernels on the same inputs (and reads the kept LoRA t, attention
    // output and lse the forward made): the gradients must be identical.
    for (const recompute of [true, 'keep-attention'] as const) {
      const recomputed = await gpuGrads(c, weights, lora, batch, recompute);
      for (const [tensor, grad] of kept) expect(maxAbsDiff(recomputed.get(tensor)!, grad), `${tensor}, recompute ${recompute}`).toBe(0);
    }
    const checked = expectFiniteDifferences(kept, refLora, () => qwen3LossRef(c, tensors, refLora, batch), 15);
    expect(checked).toBe(3 * 2 * c.numLayers * PROJECTIONS.length);
  });
});

/** Three sequences over the batch's tokens (runs across the row boundary), and token 0 in none (id 3). */
function sequenceIds(b: RefBatch): Uint32Array {
  return Uint32Array.from({ length: b.B * b.T }, (_, n) => (n === 0 ? 3 : Math.floor((n * 3) / (b.B * b.T))));
}

/** The per-sequence log-prob head in a training graph: sums, counts and the LoRA gradients of Σ dSeq · sums. */
async function gpuSequenceLogprobs(c: ModelConfig, w: ModelWeights, lora: LoraWeights, b: RefBatch, seqOf: Uint32Array, dSeq: Float32Array) {
  const head = new SequenceLogprobHead(gpu, w.lmHead, b.B * b.T, dSeq.length);
  const g = new Qwen3Graph(gpu, c, w, { B: b.B, T: b.T, mode: 'train', lora, recompute: true, head });
  try {
    g.setBatch({ inputIds: b.ids, positions: b.positions, segments: b.segments });
    head.setSequences(b.targets, seqOf);
    g.zeroGrads.run();
    g.forward.run();
    const { sums, counts } = await head.read();
    // The stage's turn: the gradient per sequence comes back in between the two programs.
    head.setSequenceGrad(dSeq);
    g.backward.run();
    return { sums, counts, grads: await readLoraTensors(gpu, lora, 'grads') };
  } finally {
    g.destroy();
  }
}

describe.each(MODELS)('Qwen3 graph with the per-sequence log-prob head: $name', ({ name, config: c, lora: settings }) => {
  const tensors = randomQwen3Tensors(c, 61);
  const refLora = randomRefLora(c, settings, 62);
  const batch = randomBatch(c, 63);
  const seqOf = sequenceIds(batch);
  let weights: ModelWeights;
  let lora: LoraWeights;
  beforeAll(() => {
    weights = loadOnGpu(`seq-${name.replace(/\W+/g, '-')}`, c, tensors, 'f32');
    lora = loraOnGpu(c, refLora);
  });
  afterAll(() => {
    releaseLora(gpu, lora);
    releaseModelWeights(gpu, weights);
  });
  const refSums = (r: RefLora) => sequenceLogprobRef(qwen3ForwardRef(c, tensors, r, batch).logits, batch.targets, seqOf, B * T, c.vocabSize, 3).sums;

  it('sums and counts equal the reference; the gradient equals finite differences of Σ dSeq · sums', async () => {
    const dSeq = new Float32Array([0.7, -1.3, 0.4]);
    const got = await gpuSequenceLogprobs(c, weights, lora, batch, seqOf, dSeq);
    const ref = sequenceLogprobRef(qwen3ForwardRef(c, tensors, refLora, batch).logits, batch.targets, seqOf, B * T, c.vocabSize, 3);
    expect([...got.counts]).toEqual([...ref.counts]);
    expect(Math.min(...ref.counts)).toBeGreaterThan(0);
    expect(maxAbsDiff(got.sums, ref.sums)).toBeLessThanOrEqual(1e-4 * B * T);
    const checked = expectFiniteDifferences(got.grads, refLora, () => refSums(refLora).reduce((acc, v, s) => acc + dSeq[s]! * v, 0), 64);
    expect(checked).toBe(3 * 2 * c.numLayers * PROJECTIONS.length);
  });

  it('with dSeq = −1/count everywhere, its LoRA gradients are the token cross-entropy\'s', async () => {
    const all = new Uint32Array(B * T);
    const counted = batch.targets.filter((t) => t >= 0).length;
    const got = await gpuSequenceLogprobs(c, weights, lora, batch, all, new Float32Array([-1 / counted]));
    const ce = await gpuGrads(c, weights, lora, batch, true);
    for (const [tensor, grad] of ce) expect(maxRelDiff(got.grads.get(tensor)!, grad), tensor).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(-got.sums[0]! / counted - (await gpuLoss(c, weights, lora, batch)))).toBeLessThanOrEqual(1e-5);
  });
});

describe('Qwen3 graph: a BF16 checkpoint from writeRandomModel', () => {
  it('loaded as bf16, logits and loss equal the reference on the checkpoint values', async () => {
    const c = config({ vocabSize: 53, hiddenSize: 28, intermediateSize: 46, numHeads: 3, numKvHeads: 1, headDim: 10, tieWordEmbeddings: true });
    const dir = path.join(tmp, 'random-bf16');
    writeRandomModel(dir, c, 21, 'BF16');
    const ckpt = Checkpoint.open(dir);
    const tensors: RefTensors = new Map([...modelTensorShapes(c).keys()].map((n) => [n, ckpt.readF32(n)]));
    const weights = loadModelWeights(gpu, ckpt, loadModelConfig(dir), 'bf16');
    ckpt.close();
    try {
      const batch = randomBatch(c, 22);
      expect(maxAbsDiff(await gpuLogits(c, weights, undefined, batch), qwen3ForwardRef(c, tensors, undefined, batch).logits)).toBeLessThanOrEqual(1e-4);
      expect(Math.abs((await gpuLoss(c, weights, undefined, batch)) - qwen3LossRef(c, tensors, undefined, batch))).toBeLessThanOrEqual(1e-5);
    } finally {
      releaseModelWeights(gpu, weights);
    }
  });
});

describe('Qwen3 graph: weights split into many binding parts', () => {
  it('with a 1 KiB binding limit, f32 and bf16 logits, loss and gradients equal the reference', async () => {
    const { config: c, lora: settings } = MODELS[0]!;
    const tensors = randomQwen3Tensors(c, 41);
    const refLora = randomRefLora(c, settings, 42);
    const batch = randomBatch(c, 43);
    // Rows here are 80 to 288 bytes: every matrix is cut into parts of 3 to 12 rows.
    const small = await testGpu({ maxBindingBytes: 1024 });
    // The helpers above use the file's `gpu`: point it at the small-binding device for this test.
    const main = gpu;
    gpu = small;
    try {
      const lora = loraOnGpu(c, refLora);
      for (const dtype of ['f32', 'bf16'] as const) {
        const w = loadOnGpu(`split-${dtype}`, c, tensors, dtype);
        expect(w.lmHead.parts.length).toBe(Math.ceil(c.vocabSize / Math.floor(1024 / (c.hiddenSize * (dtype === 'f32' ? 4 : 2)))));
        const ref = dtype === 'f32' ? tensors : roundMatricesToBf16(c, tensors);
        expect(maxAbsDiff(await gpuLogits(c, w, lora, batch), qwen3ForwardRef(c, ref, refLora, batch).logits)).toBeLessThanOrEqual(1e-4);
        expect(Math.abs((await gpuLoss(c, w, lora, batch)) - qwen3LossRef(c, ref, refLora, batch))).toBeLessThanOrEqual(1e-5);
        if (dtype === 'f32') {
          // Against the same model loaded whole on the main device.
          const grads = await gpuGrads(c, w, lora, batch, true);
          // No layer's gradients fit a 1 KiB binding: the backward took lora-backward's fallback, the GEMMs.
          const g = new Qwen3Graph(gpu, c, w, { B: batch.B, T: batch.T, mode: 'train', lora, recompute: true });
          const labels = g.backward.steps.map((s) => s.label);
          g.destroy();
          expect(labels.some((l) => /^L0\.\w+_proj\.dB/.test(l))).toBe(true);
          expect(labels.some((l) => l.endsWith('.lora'))).toBe(false);
          gpu = main;
          const wholeWeights = loadOnGpu('split-whole', c, tensors, 'f32');
          const wholeLora = loraOnGpu(c, refLora);
          const whole = await gpuGrads(c, wholeWeights, wholeLora, batch, true);
          releaseLora(gpu, wholeLora);
          releaseModelWeights(gpu, wholeWeights);
          gpu = small;
          for (const [name, g] of whole) expect(maxRelDiff(grads.get(name)!, g), name).toBeLessThanOrEqual(1e-5);
        }
        releaseModelWeights(gpu, w);
      }
      releaseLora(gpu, lora);
    } finally {
      gpu = main;
      small.destroy();
    }
  });
});

describe('Qwen3 graph: LoRA dropout', () => {
  const { config: c, lora: noDropout } = MODELS[0]!;
  const p = 0.3;
  const settings: LoraSettings = { ...noDropout, dropout: p };
  const tensors = randomQwen3Tensors(c, 51);
  const refLora = randomRefLora(c, settings, 52);
  const batch = randomBatch(c, 53);
  const seed = 42;
  /** The reference LoRA input: the same masks as the graph's at (seed, microBatch). */
  const masked = (microBatch: number): LoraInputRef => (l, proj, x) => dropoutRef(x, seed, microBatch, loraDropoutSalt(l, proj), p);
  let weights: ModelWeights;
  let lora: LoraWeights;
  beforeAll(() => {
    weights = loadOnGpu('dropout', c, tensors, 'f32');
    lora = loraOnGpu(c, refLora);
  });
  afterAll(() => {
    releaseLora(gpu, lora);
    releaseModelWeights(gpu, weights);
  });

  it('the training loss equals the reference with the same masks; another micro-batch draws other masks; evaluation never drops', async () => {
    const plain = qwen3LossRef(c, tensors, refLora, batch);
    const ref3 = qwen3LossRef(c, tensors, refLora, batch, masked(3));
    // Dropout must move the loss far beyond the tolerance, or this test would prove nothing.
    expect(Math.abs(ref3 - plain)).toBeGreaterThan(1e-2);
    expect(Math.abs((await gpuTrain(c, weights, lora, batch, false, seed, 3)).loss - ref3)).toBeLessThanOrEqual(1e-5);
    const ref4 = qwen3LossRef(c, tensors, refLora, batch, masked(4));
    expect(Math.abs(ref4 - ref3)).toBeGreaterThan(1e-3);
    expect(Math.abs((await gpuTrain(c, weights, lora, batch, true, seed, 4)).loss - ref4)).toBeLessThanOrEqual(1e-5);
    expect(Math.abs((await gpuLoss(c, weights, lora, batch)) - plain)).toBeLessThanOrEqual(1e-5);
  });

  it('LoRA gradients (recompute on, with and without attention kept, and off: identical) equal finite differences of the reference with fixed masks', async () => {
    const kept = await gpuTrain(c, weights, lora, batch, false, seed, 7);
    for (const recompute of [true, 'keep-attention'] as const) {
      const recomputed = await gpuTrain(c, weights, lora, batch, recompute, seed, 7);
      expect(recomputed.loss).toBe(kept.loss);
      for (const [tensor, grad] of kept.grads) expect(maxAbsDiff(recomputed.grads.get(tensor)!, grad), `${tensor}, recompute ${recompute}`).toBe(0);
    }
    const checked = expectFiniteDifferences(kept.grads, refLora, () => qwen3LossRef(c, tensors, refLora, batch, masked(7)), 54);
    expect(checked).toBe(3 * 2 * c.numLayers * PROJECTIONS.length);
  });
});
