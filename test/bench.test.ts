import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { benchmarkTraining } from '../bench/train.js';
import { benchmarkKernels } from '../bench/kernels.js';
import { kernelName } from '../bench/profile.js';
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
    expect(r.commit).toMatch(/^([0-9a-f]{40}(-dirty)?|unknown)$/);
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
    // Two layers, each forward recorded twice (once more for recomputation in the backward).
    expect(calls.get('q.loraA')).toBe(4);
    expect(calls.get('attention backward dq')).toBe(2);
    // 2 layers x 7 projections x (A, B): one AdamW update each.
    expect(calls.get('adamw.update')).toBe(28);
    expect(r.kernels.kernels.some((k) => /^L\d+\./.test(k.kernel))).toBe(false);
  });
});

describe('kernel benchmark', () => {
  it('reports matmul and attention speeds at small shapes', async () => {
    const r = await benchmarkKernels({ size: 'tiny', tokens: 16, square: 32, attnSeq: 16, reps: 1, gpu });
    expect(r.matmul).toHaveLength(16);
    expect(r.matmul.filter((m) => m.dtype === 'bf16').map((m) => m.name)).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'square']);
    expect(r.matmul.find((m) => m.name === 'gate_proj')).toMatchObject({ M: 16, N: 160, K: 64 });
    for (const m of r.matmul) expect(m.tflops).toBeGreaterThan(0);
    expect(r.attention.map((a) => a.pass)).toEqual(['forward', 'backward']);
    for (const a of r.attention) expect(a.ms).toBeGreaterThan(0);
  });
});

describe('results', () => {
  it('strips the layer prefix and weight-part suffix from labels', () => {
    expect(kernelName('L12.gate.dB')).toBe('gate.dB');
    expect(kernelName('L3.up[4096]')).toBe('up');
    expect(kernelName('cross-entropy.logits[0]')).toBe('cross-entropy.logits');
  });

  it('collects runs and the PyTorch peer in one file per machine and renders them', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-'));
    const device = { vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H100 80GB HBM3', software: false };
    const ours = { bench: 'train', impl: 'loraforge', size: '0.6B', batch: 1, seq: 2048, rank: 8, dtype: 'bf16', recompute: true, step_s: 0.5, tokens_per_s: 4096, peak_gib: 3.5, date: '2026-11-26T10:00:00Z', commit: 'abcdef0123', device };
    const file = appendRuns(`${dir}/`, [ours]);
    expect(path.basename(file)).toBe('2026-11-26-nvidia-h100-80gb-hbm3.json');
    const peer = '{"peer": "torch+peft", "size": "0.6B", "dtype": "bf16", "grad_ckpt": true, "rank": 8, "batch": 1, "seq": 2048, "step_s": 0.25, "tokens_per_s": 8192, "peak_gib": 5.1}\n';
    appendRuns(file, importPeerLines(peer, 'peer.jsonl'));
    const runs = readResultFile(file).runs;
    expect(runs.map((r) => r.impl)).toEqual(['loraforge', 'torch+peft']);
    expect(runs[1]).toMatchObject({ bench: 'train', recompute: true, tokens_per_s: 8192 });
    expect(Date.parse(String(runs[1]!.date))).toBeGreaterThan(Date.parse('2026-01-01'));
    const table = renderTables(dir);
    expect(table).toContain('| NVIDIA H100 80GB HBM3 | loraforge | 0.6B | 1×2048 | 8 | bf16 | yes | 0.5 | 4,096 | 3.5 | 2026-11-26 | abcdef01 |');
    expect(table).toContain('| NVIDIA H100 80GB HBM3 | torch+peft | 0.6B | 1×2048 | 8 | bf16 | yes | 0.25 | 8,192 | 5.1 |');
    fs.rmSync(dir, { recursive: true });
  });
});
