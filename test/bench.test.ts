import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as v8 from 'node:v8';
import { build } from 'rolldown';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { plainBatch, Qwen3Graph, shiftLabels } from '../src/model/qwen3.js';
import { releaseModelWeights } from '../src/model/weights.js';
import { initLora, readLoraTensors, releaseLora, writeLoraTensors } from '../src/train/lora.js';
import { PROJECTIONS } from '../src/model/family.js';
import { benchmarkTraining } from '../bench/train.js';
import { randomLoraValues, randomQwen3HostWeights, randomQwen3Weights, randomTokens } from '../bench/model.js';
import { TINY_QWEN3 } from '../src/model/config.js';
import type { TfjsStepInputs } from '../bench/tfjs-peer.js';
import { benchmarkKernels } from '../bench/kernels.js';
import { H100_LIMITS, planStep } from '../bench/plan.js';
import { kernelName, passNanoseconds } from '../bench/profile.js';
import { appendRuns, importPeerLines, readResultFile, renderTables } from '../bench/results.js';
import { testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu({ timestamps: true });
});
afterAll(() => gpu?.destroy());

describe('training benchmark', () => {
  it('times LoRA steps of the tiny model and profiles every dispatch', async () => {
    const r = await benchmarkTraining({ size: 'tiny', batch: 1, seq: 32, rank: 4, recompute: true, dtype: 'bf16', warmup: 1, steps: 2, gpu });
    expect(r.tokens_per_s).toBeGreaterThan(0);
    expect(r.step_s).toBeCloseTo(32 / r.tokens_per_s, 3);
    // Random weights and B = 0: the loss is about ln(vocab 512) = 6.24.
    expect(Math.abs(r.loss - Math.log(512))).toBeLessThan(0.5);
    expect(r.weights_bytes).toBeGreaterThan(0);
    expect(r.peak_bytes).toBeGreaterThan(r.weights_bytes);
    expect(r.device.vendor.length + r.device.description.length).toBeGreaterThan(0);
    expect(r.commit).toMatch(/^([0-9a-f]{40}|unknown)$/);
    expect(typeof r.dirty).toBe('boolean');
    if (!gpu.features.timestamps) {
      expect(r.kernels).toEqual({ available: false, reason: expect.stringContaining('timestamp-query') });
      return;
    }
    if (!r.kernels.available) throw new Error('timestamps were requested and offered, yet no profile came back');
    const sum = r.kernels.kernels.reduce((s, k) => s + k.ms, 0);
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeCloseTo(r.kernels.total_ms, 1);
    expect(r.kernels.kernels.reduce((s, k) => s + k.calls, 0)).toBe(r.kernels.dispatches);
    const calls = new Map(r.kernels.kernels.map((k) => [k.kernel, k.calls]));
    // Two layers forward; the recomputation in the backward reads each layer's kept t = x·Aᵀ instead of redoing
    // it. q, k and v share one down-projection pass, gate and up another.
    expect(calls.get('q_proj.k_proj.v_proj.loraA')).toBe(2);
    expect(calls.get('gate_proj.up_proj.loraA')).toBe(2);
    expect(calls.has('q_proj.loraA')).toBe(false);
    // Counted work: the step's dispatches are the profile's; the GEMM-shaped kernels count their FLOPs.
    expect(r.dispatches_per_step).toBe(r.kernels.dispatches);
    expect(r.flops_per_step).toBe(r.kernels.flops);
    const dx = r.kernels.kernels.find((k) => k.kernel === 'q_proj.dx')!;
    expect(dx.flops).toBeGreaterThan(0);
    expect(dx.gbps).toBeGreaterThan(0);
    expect(calls.get('attention-backward dq')).toBe(2);
    // 2 layers x 7 projections x (A, B) in one flat factor buffer: one AdamW update for all 28 tensors.
    expect(calls.get('adamw.update')).toBe(1);
    expect(r.kernels.kernels.some((k) => /^L\d+\./.test(k.kernel))).toBe(false);
  });
});

const REPO = fileURLToPath(new URL('..', import.meta.url));

/**
 * tfjsLossAndGrads in a child process (tfjs keeps its own WebGPU device, and the process, alive): bench/ bundled
 * into dist-bench/ so that tfjs and webgpu load from node_modules; inputs and results cross as v8-serialised
 * typed arrays, bit for bit.
 */
async function tfjsLossAndGradsInChild(inputs: TfjsStepInputs): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  fs.mkdirSync(path.join(REPO, 'dist-bench'), { recursive: true });
  const dir = fs.mkdtempSync(path.join(REPO, 'dist-bench', 'tfjs-check-'));
  try {
    const entry = path.join(dir, 'entry.ts');
    fs.writeFileSync(entry, [
      "import * as fs from 'node:fs';",
      "import * as v8 from 'node:v8';",
      `import { tfjsLossAndGrads } from ${JSON.stringify(path.join(REPO, 'bench', 'tfjs-peer.ts'))};`,
      'const [input, output] = process.argv.slice(2);',
      'fs.writeFileSync(output, v8.serialize(await tfjsLossAndGrads(v8.deserialize(fs.readFileSync(input)))));',
      'process.exit(0);',
    ].join('\n'));
    await build({ input: entry, platform: 'node', external: [/^webgpu$/, /^@tensorflow\//], output: { file: path.join(dir, 'entry.js'), format: 'esm' }, logLevel: 'silent' });
    fs.writeFileSync(path.join(dir, 'in.bin'), v8.serialize(inputs));
    await promisify(execFile)(process.execPath, [path.join(dir, 'entry.js'), path.join(dir, 'in.bin'), path.join(dir, 'out.bin')]);
    return v8.deserialize(fs.readFileSync(path.join(dir, 'out.bin'))) as { loss: number; grads: Map<string, Float32Array> };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function relativeDifference(a: Float32Array, b: Float32Array): number {
  let diff = 0, norm = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    norm += b[i]! ** 2;
  }
  return Math.sqrt(diff / norm);
}

describe('tfjs peer', () => {
  it('computes the loss and LoRA gradients of loraforge\'s step on the same values', async () => {
    const config = TINY_QWEN3;
    const [B, T, rank, alpha, seed] = [2, 12, 4, 8, 3];
    // The bench's seeded weights, PEFT's A and a non-zero B (so that the adapter's path counts), two rows.
    const lora = randomLoraValues(config, rank, seed + 1, 0.05);
    const ids = randomTokens(B * T, config.vocabSize, seed + 2);
    const peer = tfjsLossAndGradsInChild({ config, weights: randomQwen3HostWeights(config, seed), lora, rank, alpha, ids, B, T });

    const weights = randomQwen3Weights(gpu, config, 'f32', seed);
    const ours = initLora(gpu, config, { rank, alpha, rslora: false, dropout: 0, targets: [...PROJECTIONS] }, 0);
    writeLoraTensors(gpu, ours, lora, 'weights');
    const graph = new Qwen3Graph(gpu, config, weights, { B, T, mode: 'train', lora: ours, recompute: true });
    graph.setBatch(plainBatch(ids, B, T, shiftLabels(ids, B, T)));
    graph.zeroGrads.run();
    graph.program.run();
    const loss = await graph.readLoss();
    const grads = await readLoraTensors(gpu, ours, 'grads');
    graph.destroy();
    releaseLora(gpu, ours);
    releaseModelWeights(gpu, weights);

    const theirs = await peer;
    expect(Math.abs(theirs.loss - loss)).toBeLessThan(1e-4);
    expect([...theirs.grads.keys()].sort()).toEqual([...grads.keys()].sort());
    for (const [name, g] of grads) {
      // B is non-zero, so every A gets a gradient too.
      expect(Math.hypot(...g), name).toBeGreaterThan(0);
      expect(relativeDifference(theirs.grads.get(name)!, g), name).toBeLessThan(1e-3);
    }
  });
});

describe('kernel benchmark', () => {
  it('reports matmul and attention speeds at small shapes', async () => {
    const r = await benchmarkKernels({ size: 'tiny', tokens: 16, square: 32, attnSeq: 16, reps: 1, gpu });
    expect(r.matmul).toHaveLength(16);
    expect(r.matmul.filter((m) => m.dtype === 'bf16').map((m) => m.name)).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'square']);
    expect(r.matmul.find((m) => m.name === 'gate_proj')).toMatchObject({ M: 16, N: 160, K: 64 });
    for (const m of r.matmul) expect(m.tflops).toBeGreaterThan(0);
    for (const m of r.matmul) expect(m.flops).toBe(2 * m.M * m.N * m.K);
    expect(r.matmul_input_grad).toHaveLength(7);
    expect(r.lora.map((l) => l.name)).toHaveLength(6);
    // The training step's LoRA backward beside the three split GEMMs it replaces: the same products, one pass + its sum.
    const fused = r.lora.find((l) => l.name.startsWith('dT, dB, dA in one pass'))!;
    const split = r.lora.filter((l) => /^d[TBA] /.test(l.name));
    expect(split).toHaveLength(3);
    expect(fused.dispatches).toBe(2);
    const products = split.reduce((n, l) => n + 2 * l.M * l.N * l.K, 0);
    // The pass counts the three products; its per-layer sum adds one add per partial element.
    expect(fused.flops).toBeGreaterThanOrEqual(products);
    expect(fused.flops).toBeLessThan(1.25 * products);
    expect(fused.ms).toBeGreaterThan(0);
    for (const l of r.lora) expect(l.gbps).toBeGreaterThan(0);
    expect(r.attention.map((a) => a.pass)).toEqual(['forward', 'backward']);
    for (const a of r.attention) expect(a.ms).toBeGreaterThan(0);
  });
});

describe('step plan', () => {
  it('counts one step\'s dispatches and peak bytes from the recorded programs, without a GPU', () => {
    const r = planStep({ size: 'tiny', batch: 1, seq: 32, rank: 4, recompute: true, dtype: 'bf16', ...H100_LIMITS });
    expect(r.dispatches_per_step).toBe(Object.values(r.dispatches_by_kernel).reduce((a, b) => a + b, 0));
    // With 80 GB the trainer keeps each layer's attention output: the recomputation redoes no attention.
    expect(r.keep_attention).toBe(true);
    expect(r.dispatches_by_kernel['attention']).toBe(TINY_QWEN3.numLayers);
    expect(r.flops_per_step).toBeGreaterThan(0);
    expect(r.planned_peak_bytes).toBe(Object.values(r.memory).reduce((a, b) => a + b, 0));
    expect(r.fits).toBe(true);
    // A byte short of that plan it keeps none, and redoes every layer's attention but the last one's.
    const within = (memoryBytes: number) => planStep({ size: 'tiny', batch: 1, seq: 32, rank: 4, recompute: true, dtype: 'bf16', maxBindingBytes: H100_LIMITS.maxBindingBytes, memoryBytes });
    const tight = within(r.planned_peak_bytes - 1);
    expect(tight.keep_attention).toBe(false);
    expect(tight.dispatches_by_kernel['attention']).toBe(2 * TINY_QWEN3.numLayers - 1);
    expect(tight.fits).toBe(true);
    expect(within(tight.planned_peak_bytes - 1).fits).toBe(false);
  });
});

describe('results', () => {
  it('refuses a missing or non-monotonic timestamp instead of counting the pass as 0 ns', () => {
    expect(passNanoseconds('matmul', 1000n, 1750n)).toBe(750);
    expect(() => passNanoseconds('matmul', 0n, 1750n)).toThrow(/'matmul' has a missing timestamp/);
    expect(() => passNanoseconds('matmul', 1000n, 0n)).toThrow(/missing timestamp/);
    expect(() => passNanoseconds('matmul', 1750n, 1000n)).toThrow(/non-monotonic/);
    expect(() => passNanoseconds('matmul', 1000n, 1000n)).toThrow(/non-monotonic/);
  });

  it('strips the layer prefix and weight-part suffix from labels', () => {
    expect(kernelName('L12.gate.dB')).toBe('gate.dB');
    expect(kernelName('L3.up[4096]')).toBe('up');
    expect(kernelName('cross-entropy.logits[0]')).toBe('cross-entropy.logits');
  });

  it('collects runs and the PyTorch peer in one file per machine and renders them', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-'));
    const device = { vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H100 80GB HBM3', software: false };
    const commit = '0123456789abcdef0123456789abcdef01234567';
    const ours = { bench: 'train', impl: 'loraforge', size: '0.6B', batch: 1, seq: 2048, rank: 8, dtype: 'bf16', recompute: true, step_s: 0.5, tokens_per_s: 4096, peak_gib: 3.5, date: '2026-11-26T10:00:00Z', commit, dirty: false, device };
    const file = appendRuns(`${dir}/`, [ours]);
    expect(path.basename(file)).toBe('2026-11-26-nvidia-h100-80gb-hbm3.json');
    const peer = '{"peer": "torch+peft", "size": "0.6B", "dtype": "bf16", "grad_ckpt": true, "rank": 8, "batch": 1, "seq": 2048, "step_s": 0.25, "tokens_per_s": 8192, "peak_gib": 5.1}\n';
    appendRuns(file, importPeerLines(peer, 'peer.jsonl'));
    appendRuns(file, [{ ...ours, rank: 16, dirty: true }]);
    const runs = readResultFile(file).runs;
    expect(runs.map((r) => r.impl)).toEqual(['loraforge', 'torch+peft', 'loraforge']);
    expect(runs[1]).toMatchObject({ bench: 'train', recompute: true, tokens_per_s: 8192 });
    expect(Date.parse(String(runs[1]!.date))).toBeGreaterThan(Date.parse('2026-01-01'));
    const table = renderTables(dir);
    // The full commit, and whether the tree was dirty.
    expect(table).toContain(`| NVIDIA H100 80GB HBM3 | loraforge | 0.6B | 1×2048 | 8 | bf16 | yes | 0.5 | 4,096 | 3.5 | 2026-11-26 | ${commit} |`);
    expect(table).toContain(`| NVIDIA H100 80GB HBM3 | loraforge | 0.6B | 1×2048 | 16 | bf16 | yes | 0.5 | 4,096 | 3.5 | 2026-11-26 | ${commit} (dirty) |`);
    expect(table).toContain('| NVIDIA H100 80GB HBM3 | torch+peft | 0.6B | 1×2048 | 8 | bf16 | yes | 0.25 | 8,192 | 5.1 |');
    fs.rmSync(dir, { recursive: true });
  });
});
