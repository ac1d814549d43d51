// The memory plan (a dry run of the job on a counting Gpu) against what the weights, adapter, graph, trainer and
// kernels really allocate on the device (gpu.peakBytes, per category), and the refusals of checkMemory.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backwardTiles, dsUnitBytes } from '../src/kernels/attention-backward.js';
import { testGpu } from './helpers.js';
import { TINY_CONFIG } from './tiny-model.js';
import type { ModelConfig } from '../src/model/config.js';
import type { Gpu } from '../src/gpu/device.js';
import { writeRandomModel } from '../src/model/random-model.js';
import { Checkpoint } from '../src/model/safetensors.js';
import { CountingGpu } from '../src/gpu/dry-run.js';
import { loadModelWeights, releaseModelWeights } from '../src/model/weights.js';
import { initLora, releaseLora } from '../src/train/lora.js';
import { PROJECTIONS, type Projection } from '../src/model/family.js';
import { LoraTrainer } from '../src/train/trainer.js';
import { checkMemory, chooseKeepAttention, chooseRecompute, estimateTrainingMemory, KEEP_ATTENTION_UNBUDGETED_SHARE, planTrainingStep, type MemoryEstimate } from '../src/train/memory-plan.js';
import type { Program } from '../src/gpu/program.js';
import { QWEN3_SIZES } from '../src/model/config.js';
import { UserError } from '../src/errors.js';
import { presetMatrixDtypes, uploadQuantizer } from '../src/gguf/upload-quantize.js';
import { readFileSync } from 'node:fs';
import type { PreferenceKind } from '../src/kernels/preference-loss.js';

const UNTIED: ModelConfig = { ...TINY_CONFIG, hiddenSize: 96, intermediateSize: 200, numLayers: 3, numHeads: 6, numKvHeads: 2, vocabSize: 700, tieWordEmbeddings: false };
/** Rows of whole 256-blocks: real K-quants under quantization_bit 4. */
const WIDE: ModelConfig = { ...UNTIED, hiddenSize: 256, intermediateSize: 512, numHeads: 4, numKvHeads: 2, headDim: 64 };

let root: string;
let gpu: Gpu;
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-memory-'));
  gpu = await testGpu();
});
afterAll(() => {
  gpu?.destroy();
  rmSync(root, { recursive: true, force: true });
});

interface Case {
  name: string;
  config: ModelConfig;
  B: number;
  T: number;
  rank: number;
  targets: Projection[];
  recompute: boolean;
  keepAttention?: boolean;
  weightDtype: 'f32' | 'bf16';
  dropout?: number;
  /** quantization_bit: matrices quantized while uploaded (the q8_0 / q4_k_m type mix). */
  bits?: 4 | 8;
  /** A preference stage: sequence heads (and a reference forward) instead of cross-entropy. */
  preference?: PreferenceKind;
}

const CASES: Case[] = [
  { name: 'tiny, all targets, recompute', config: TINY_CONFIG, B: 2, T: 32, rank: 4, targets: [...PROJECTIONS], recompute: true, weightDtype: 'f32' },
  { name: 'tiny, all targets, keep activations', config: TINY_CONFIG, B: 2, T: 32, rank: 4, targets: [...PROJECTIONS], recompute: false, weightDtype: 'f32' },
  { name: 'untied, q/v only, bf16, long rows', config: UNTIED, B: 1, T: 96, rank: 8, targets: ['q_proj', 'v_proj'], recompute: false, weightDtype: 'bf16' },
  { name: 'untied, mlp only, batch 4', config: UNTIED, B: 4, T: 24, rank: 2, targets: ['gate_proj', 'up_proj', 'down_proj'], recompute: true, weightDtype: 'f32' },
  { name: 'untied, all targets, LoRA dropout', config: UNTIED, B: 2, T: 48, rank: 4, targets: [...PROJECTIONS], recompute: true, weightDtype: 'f32', dropout: 0.1 },
  { name: 'untied, recompute, attention kept, LoRA dropout', config: UNTIED, B: 2, T: 48, rank: 4, targets: [...PROJECTIONS], recompute: true, keepAttention: true, weightDtype: 'f32', dropout: 0.1 },
  { name: 'untied, quantization_bit 8', config: UNTIED, B: 2, T: 32, rank: 4, targets: [...PROJECTIONS], recompute: true, weightDtype: 'f32', bits: 8 },
  { name: 'wide, quantization_bit 4 (Q4_K, Q6_K)', config: WIDE, B: 2, T: 32, rank: 4, targets: [...PROJECTIONS], recompute: true, weightDtype: 'f32', bits: 4 },
  { name: 'tiny, dpo sigmoid (reference forward), recompute', config: TINY_CONFIG, B: 4, T: 24, rank: 4, targets: [...PROJECTIONS], recompute: true, weightDtype: 'f32', preference: 'sigmoid' },
  { name: 'untied, kto, keep activations', config: UNTIED, B: 2, T: 24, rank: 4, targets: [...PROJECTIONS], recompute: false, weightDtype: 'f32', preference: 'kto' },
  { name: 'untied, simpo (no reference), bf16', config: UNTIED, B: 2, T: 32, rank: 4, targets: ['q_proj', 'v_proj'], recompute: true, weightDtype: 'bf16', preference: 'simpo' },
  { name: 'qwen2 (q/k/v biases, no q/k norm), all targets, keep activations', config: { ...UNTIED, modelType: 'qwen2' }, B: 2, T: 24, rank: 4, targets: [...PROJECTIONS], recompute: false, weightDtype: 'f32' },
];

describe('estimateTrainingMemory', () => {
  test.each(CASES)('equals the measured peak, and each category the bytes allocated in it: $name', async (c) => {
    const dir = join(root, c.name.replace(/\W+/g, '-'));
    writeRandomModel(dir, c.config, 3, 'F32');
    const before = gpu.liveBytes;
    const categoryBefore = new Map(gpu.liveByCategory);
    gpu.peakBytes = before;
    {
      const ckpt = Checkpoint.open(dir);
      const weights = loadModelWeights(gpu, ckpt, c.config, c.weightDtype, c.bits && uploadQuantizer(c.bits, c.config));
      if (c.bits) expect(weights.layers[0]!.proj.up_proj.dtype).toBe(c.bits === 8 ? 'q8_0' : 'q4_k');
      ckpt.close();
      const afterWeights = gpu.liveBytes;
      const lora = initLora(gpu, c.config, { rank: c.rank, alpha: 2 * c.rank, rslora: false, dropout: c.dropout ?? 0, targets: c.targets }, 1);
      const afterLora = gpu.liveBytes;
      const trainer = new LoraTrainer(gpu, c.config, weights, lora, {
        B: c.B, T: c.T, recompute: c.recompute, keepAttention: c.keepAttention, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 },
        preference: c.preference && { kind: c.preference, beta: 0.5, ftx: 0.1, gamma: 1, chosenWeight: 1, rejectedWeight: 1 },
      });
      const measured = gpu.peakBytes - before;
      const grown = (category: string) => (gpu.liveByCategory.get(category) ?? 0) - (categoryBefore.get(category) ?? 0);
      const matrixDtype = c.bits ? presetMatrixDtypes(c.bits === 8 ? 'q8_0' : 'q4_k_m', c.config) : undefined;
      const e = estimateTrainingMemory(c.config, { ...c, matrixDtype, maxBindingBytes: gpu.maxBindingBytes });
      expect(e.total).toBe(e.weights + e.activations + e.lora + e.optimizer + e.scratch);
      expect(e.total, 'the whole job').toBe(measured);
      expect(e.weights, 'weights').toBe(afterWeights - before);
      expect(e.lora, 'LoRA').toBe(afterLora - afterWeights);
      expect(e.activations, 'activations').toBe(grown('activations'));
      expect(e.optimizer, 'optimizer').toBe(grown('optimizer'));
      expect(e.activations * e.optimizer * e.scratch).toBeGreaterThan(0);
      // The plan's step is the one the trainer records: the same dispatches, in the same order.
      const plan = planTrainingStep(c.config, { ...c, matrixDtype, maxBindingBytes: gpu.maxBindingBytes });
      const labels = (programs: Program[]) => programs.flatMap((p) => p.steps.map((s) => ('pipeline' in s ? s.label : `copy ${s.label}`)));
      expect(labels(plan.stepPrograms)).toEqual(labels(trainer.stepPrograms));
      expect(plan.memory.total).toBe(e.total);
      trainer.destroy();
      releaseLora(gpu, lora);
      releaseModelWeights(gpu, weights);
      expect(gpu.liveBytes, 'every buffer of the trainer is released').toBe(before);
    }
  });

  test('names the largest buffer', () => {
    const plan = (T: number) => estimateTrainingMemory(UNTIED, { B: 2, T, rank: 4, targets: ['q_proj', 'v_proj'], recompute: false, weightDtype: 'f32' });
    // 80 tokens: the f32 embedding [700, 96] (first of the two) outweighs the logits chunk [80, 700] and MLP activations [80, 200].
    expect(plan(40).largestBuffer).toEqual({ name: 'model.embed_tokens.weight[0]', bytes: 700 * 96 * 4 });
    // 2 rows of 400 tokens: the attention backward's dS scratch (2 rows x 2 kv heads x query tiles of 3 heads, each
    // tile's scores against all key blocks; the dry run's tiles are those of 48 KiB of workgroup memory) outweighs
    // the whole-vocabulary logits chunk [800, 700].
    const tiles = backwardTiles(UNTIED.headDim, 3, 49152);
    const dsBytes = 2 * 2 * Math.ceil(400 / Math.floor((4 * tiles.rowLanes) / 3)) * dsUnitBytes(400, 3, tiles);
    expect(dsBytes).toBeGreaterThan(800 * 700 * 4);
    expect(plan(400).largestBuffer).toEqual({ name: 'attention backward dS', bytes: dsBytes });
  });

  test('parts scale as they should: activations with tokens and layers kept, weights halve in bf16', () => {
    const base = { B: 1, T: 512, rank: 16, targets: [...PROJECTIONS], recompute: true, weightDtype: 'f32' as const };
    const c = QWEN3_SIZES['0.6B'];
    const e = estimateTrainingMemory(c, base);
    expect(estimateTrainingMemory(c, { ...base, weightDtype: 'bf16' }).weights / e.weights).toBeCloseTo(0.5, 2);
    expect(estimateTrainingMemory(c, { ...base, recompute: false }).activations).toBeGreaterThan(5 * e.activations);
    expect(estimateTrainingMemory(c, { ...base, rank: 32 }).lora).toBeCloseTo(2 * e.lora, -3);
    // 0.6B: ~0.6e9 f32 parameters = ~2.4 GB of weights.
    expect(e.weights / 1e9).toBeGreaterThan(2.2);
    expect(e.weights / 1e9).toBeLessThan(2.6);
  });
});

describe('checkMemory', () => {
  const gpuLike = { maxBindingBytes: 128 * 1024 * 1024, device: { limits: { maxBufferSize: 256 * 1024 * 1024 } } };
  const plan = (B: number, T: number, recompute = true, weightDtype: 'f32' | 'bf16' = 'f32'): MemoryEstimate =>
    estimateTrainingMemory(QWEN3_SIZES['0.6B'], { B, T, rank: 8, targets: [...PROJECTIONS], recompute, weightDtype });

  test('a job within the budget passes', () => {
    expect(() => checkMemory(plan(1, 256), gpuLike, { budget: 8 * 1024 ** 3, recompute: true, weightDtype: 'f32' })).not.toThrow();
  });

  test('over the budget: one line with the numbers and suggestions', () => {
    const e = plan(1, 256, false);
    let err: unknown;
    try {
      checkMemory(e, gpuLike, { budget: 1024 ** 3, recompute: false, weightDtype: 'f32' });
    } catch (x) {
      err = x;
    }
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    expect(msg).toMatch(/needs about [\d.]+ GiB .*weights [\d.]+ GiB.*budget is 1\.00 GiB/);
    expect(msg).toContain('per_device_train_batch_size');
    expect(msg).toContain('disable_gradient_checkpointing: false');
    expect(msg).toContain('bf16: true');
  });

  test('suggestions already followed are not repeated', () => {
    expect(() => checkMemory(plan(1, 256, true, 'bf16'), gpuLike, { budget: 1024 ** 2, recompute: true, weightDtype: 'bf16' })).toThrow(/^(?!.*(bf16: true|disable_gradient)).*cutoff_len/);
  });

  test('the budget comes from LORAFORGE_GPU_MEMORY_BYTES', () => {
    process.env.LORAFORGE_GPU_MEMORY_BYTES = String(1024 ** 2);
    try {
      expect(() => checkMemory(plan(1, 256), gpuLike, { recompute: true, weightDtype: 'f32' })).toThrow(/LORAFORGE_GPU_MEMORY_BYTES/);
      process.env.LORAFORGE_GPU_MEMORY_BYTES = 'lots';
      expect(() => checkMemory(plan(1, 256), gpuLike, { recompute: true, weightDtype: 'f32' })).toThrow(UserError);
    } finally {
      delete process.env.LORAFORGE_GPU_MEMORY_BYTES;
    }
    expect(() => checkMemory(plan(1, 256), gpuLike, { recompute: true, weightDtype: 'f32' })).not.toThrow();
  });

  test('a single buffer larger than one binding is refused whatever the budget', () => {
    // Logits chunk, MLP activations and Q|K (2048 + 1024 wide) of 64 x 4096 tokens: 3072 x 4 bytes x 262144 rows = 3 GiB per buffer.
    expect(() => checkMemory(plan(64, 4096), gpuLike, { recompute: true, weightDtype: 'f32' })).toThrow(/(MLP gate activation|Q\|K) buffer needs 3\.00 GiB, more than this GPU binds at once \(128\.0 MiB\)/);
  });
});

describe('planned peak of Qwen3 at Q4_K_M (the README table)', () => {
  const GIB = 1024 ** 3;
  const fmt = (b: number) => `${(b / GIB).toFixed(2)} GiB`;
  test('README.md gives what the plan computes', () => {
    const rows = ['| model | base weights | activations | planned peak | same in bf16 |', '|---|---|---|---|---|'];
    for (const size of ['0.6B', '1.7B', '4B', '8B'] as const) {
      const c = QWEN3_SIZES[size];
      const o = { B: 1, T: 2048, rank: 8, targets: [...PROJECTIONS], recompute: true };
      const q = estimateTrainingMemory(c, { ...o, weightDtype: 'q4_k', matrixDtype: presetMatrixDtypes('q4_k_m', c) });
      const bf16 = estimateTrainingMemory(c, { ...o, weightDtype: 'bf16' });
      expect(q.weights).toBeLessThan(0.35 * bf16.weights);
      rows.push(`| Qwen3-${size} | ${fmt(q.weights)} | ${fmt(q.activations)} | ${fmt(q.total)} | ${fmt(bf16.total)} |`);
      if (size === '8B') expect(q.total).toBeLessThan(8 * GIB);
    }
    const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
    expect(readme, rows.join('\n')).toContain(rows.join('\n'));
  });
});

describe('what the plan decides', () => {
  const c = QWEN3_SIZES['0.6B'];
  const job = { B: 1, T: 2048, rank: 8, targets: [...PROJECTIONS], weightDtype: 'bf16' as const, maxBindingBytes: 2 ** 31 - 4 };
  const dispatches = (programs: Program[], label: RegExp) => programs.flatMap((p) => p.steps).filter((s) => 'pipeline' in s && label.test(s.label)).length;

  test('the training loss takes one pass over the vocabulary in 128 MiB chunks: no lm_head recompute, a small scratch', () => {
    for (const recompute of [true, false]) {
      const plan = planTrainingStep(c, { ...job, recompute });
      // 2048 tokens x 16384 vocab rows x 4 bytes = 128 MiB a chunk: 10 chunks for Qwen3's 151936.
      const chunks = dispatches(plan.stepPrograms, /^cross-entropy\.fold/);
      expect(chunks).toBe(10);
      // One lm_head product and one gradient-sum product per chunk, then one elementwise finish into dHidden.
      expect(dispatches(plan.stepPrograms, /^cross-entropy\.logits/)).toBe(chunks);
      expect(dispatches(plan.stepPrograms, /^cross-entropy\.grad-sum/)).toBe(chunks);
      expect(dispatches(plan.stepPrograms, /^cross-entropy\.dhidden/)).toBe(1);
      if (recompute) expect(plan.memory.total).toBeLessThanOrEqual(2.5 * 1024 ** 3);
    }
  });

  test('recomputation: as the config says, else kept only when the plan without it fits the budget', () => {
    const gpu = { maxBindingBytes: 2 ** 31 - 4, device: { limits: { maxBufferSize: 2 ** 40 } } };
    const small = { ...job, T: 256 };
    const planFor = (recompute: boolean) => estimateTrainingMemory(c, { ...small, recompute });
    const kept = planFor(false).total;
    expect(chooseRecompute(true, planFor, gpu, 1e12)).toBe(false);
    expect(chooseRecompute(false, planFor, gpu, 1)).toBe(true);
    expect(chooseRecompute(undefined, planFor, gpu, undefined)).toBe(true);
    expect(chooseRecompute(undefined, planFor, gpu, kept)).toBe(false);
    expect(chooseRecompute(undefined, planFor, gpu, kept - 1)).toBe(true);
    // A kept-activations buffer beyond one binding rules it out whatever the budget.
    expect(chooseRecompute(undefined, planFor, { ...gpu, maxBindingBytes: 1 << 20 }, 1e12)).toBe(true);
  });

  test('attention kept through the recompute: when the plan with it fits the budget; with none, when it adds at most a quarter', () => {
    const small = { ...job, T: 256, recompute: true };
    const planFor = (keepAttention: boolean) => estimateTrainingMemory(c, { ...small, keepAttention });
    const kept = planFor(true);
    const dropped = planFor(false);
    // Every layer but one more [N, heads·headDim] output and [N, heads] lse (the shared pair becomes the last layer's).
    expect(kept.activations - dropped.activations).toBe((c.numLayers - 1) * 256 * (c.numHeads * c.headDim + c.numHeads) * 4);
    expect(chooseKeepAttention(false, planFor, 1e12)).toBe(false);
    expect(chooseKeepAttention(true, planFor, kept.total)).toBe(true);
    expect(chooseKeepAttention(true, planFor, kept.total - 1)).toBe(false);
    // No budget known: the share it adds to the planned total decides.
    const share = (extra: number) => (keep: boolean) => ({ ...dropped, total: keep ? dropped.total * (1 + extra) : dropped.total });
    expect(chooseKeepAttention(true, share(KEEP_ATTENTION_UNBUDGETED_SHARE), undefined)).toBe(true);
    expect(chooseKeepAttention(true, share(KEEP_ATTENTION_UNBUDGETED_SHARE + 0.01), undefined)).toBe(false);
    expect(chooseKeepAttention(true, planFor, undefined)).toBe(kept.total <= 1.25 * dropped.total);
  });

  test('the recompute redoes no LoRA down product, and no attention where each layer keeps its output', () => {
    const tiny = { B: 1, T: 32, rank: 4, targets: [...PROJECTIONS], weightDtype: 'f32' as const, recompute: true };
    const L = TINY_CONFIG.numLayers;
    for (const keepAttention of [false, true]) {
      for (const dropout of [0, 0.1]) {
        const { stepPrograms } = planTrainingStep(TINY_CONFIG, { ...tiny, keepAttention, dropout });
        // Only the forward makes t = x·Aᵀ: one pass per input (h1, attn, h2, act), or per projection under dropout.
        expect(dispatches(stepPrograms, /\.loraA$/)).toBe((dropout ? PROJECTIONS.length : 4) * L);
        // The dropout masks: the forward's LoRA inputs, then the backward's for dA; none for a recomputed t.
        expect(dispatches(stepPrograms, /\.dropout$/)).toBe(dropout ? 2 * PROJECTIONS.length * L : 0);
        // The last layer is never recomputed; the others redo attention unless they kept it.
        expect(dispatches(stepPrograms, /^L\d+\.attention$/)).toBe(keepAttention ? L : 2 * L - 1);
      }
    }
  });
});

describe('LoRA factor and gradient buffers', () => {
  test('pack every A, B, dA and dB into as few buffers as one binding each allows, aligned and apart', () => {
    const gpu = new CountingGpu({ maxBindingBytes: 20_000 });
    const lora = initLora(gpu, UNTIED, { rank: 4, alpha: 4, rslora: false, dropout: 0, targets: [...PROJECTIONS] }, 0);
    expect(lora.grads.length).toBeGreaterThan(1);
    const ranges = lora.layers.flatMap((layer) => Object.values(layer).flatMap((p) => [{ r: p.dA, bytes: 4 * 4 * p.inDim }, { r: p.dB, bytes: 4 * 4 * p.outDim }]));
    for (const [k, { r, bytes }] of ranges.entries()) {
      const owner = lora.grads.find((g) => g.buffer === r.buffer)!;
      expect(r.size).toBe(bytes);
      expect(r.offset % 256).toBe(0);
      expect(r.offset + r.size).toBeLessThanOrEqual(owner.count * 4);
      expect(owner.count * 4).toBeLessThanOrEqual(20_000);
      const prev = ranges[k - 1]?.r;
      if (prev?.buffer === r.buffer) expect(r.offset).toBeGreaterThanOrEqual(prev.offset + prev.size);
    }
    // The factors lie at the same places of as many factor buffers.
    expect(lora.params.map((f) => f.count)).toEqual(lora.grads.map((g) => g.count));
    for (const p of lora.layers.flatMap((layer) => Object.values(layer))) {
      for (const [f, g] of [[p.A, p.dA], [p.B, p.dB]] as const) {
        expect([f.offset, f.size]).toEqual([g.offset, g.size]);
        expect(lora.params.findIndex((b) => b.buffer === f.buffer)).toBe(lora.grads.findIndex((b) => b.buffer === g.buffer));
      }
    }
  });
});
