// Per-sequence log-prob sums fused with the lm head: the reference against finite differences and a hand case,
// the GPU against the reference on odd shapes (chunks and weight parts not dividing the vocabulary), bf16.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { packBf16, unpackBf16 } from '../src/gpu/dtype.js';
import { matrixFromF32, type WeightDType } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { recordSequenceLogprobBackward, recordSequenceLogprobForward, sequenceLogprobHiddenRef, sequenceLogprobRef } from '../src/kernels/sequence-logprob.js';
import { crossEntropyHiddenRef } from '../src/kernels/cross-entropy.js';
import { maxAbsDiff, maxRelDiff, randArray, rng, testGpu } from './helpers.js';

interface Case {
  N: number;
  H: number;
  V: number;
  S: number;
  hidden: Float32Array;
  lmHead: Float32Array;
  targets: Int32Array;
  seqOf: Uint32Array;
  dSeq: Float32Array;
}

/** Tokens in runs of random length per sequence (as packed rows), a quarter of targets −100, some ids = S. */
function randomCase(N: number, H: number, V: number, S: number, seed: number): Case {
  const r = rng(seed);
  const seqOf = new Uint32Array(N);
  // Runs of 2..5 tokens cycling through sequences 0..S (S: not counted).
  for (let n = 0, run = 0; n < N; run++) {
    for (let len = 2 + Math.floor(r() * 4); len > 0 && n < N; len--) seqOf[n++] = run % (S + 1);
  }
  return {
    N, H, V, S, seqOf,
    hidden: randArray(N * H, seed + 1, 1),
    lmHead: randArray(V * H, seed + 2, 0.5),
    targets: Int32Array.from({ length: N }, () => (r() < 0.25 ? -100 : Math.floor(r() * V))),
    dSeq: randArray(S, seed + 3, 1),
  };
}

function asStored(w: Float32Array, dtype: WeightDType): Float32Array {
  return dtype === 'f32' ? w : unpackBf16(new Uint16Array(packBf16(w).buffer, 0, w.length));
}

/** Σ_s dSeq[s] · sums[s] of the reference, in f64. */
function weightedSum(c: Case, hidden: Float32Array, lmHead: Float32Array): number {
  const { sums } = sequenceLogprobHiddenRef(hidden, lmHead, c.targets, c.seqOf, c.N, c.V, c.H, c.S);
  return sums.reduce((acc, v, s) => acc + c.dSeq[s]! * v, 0);
}

describe('sequenceLogprobRef', () => {
  it('matches a hand-computed case', () => {
    // Row 0 (seq 1): softmax of [0, ln 2, ln 3] is [1/6, 2/6, 3/6], target 2 -> ln(1/2). Row 1 (seq 1): uniform,
    // target 0 -> ln(1/3). Row 2 (seq 0): target −100. Row 3: sequence 2 of 2, not counted.
    const logits = new Float32Array([0, Math.log(2), Math.log(3), 1, 1, 1, 5, 0, 0, 2, 2, 2]);
    const { sums, counts, dLogits } = sequenceLogprobRef(logits, new Int32Array([2, 0, -100, 1]), new Uint32Array([1, 1, 0, 2]), 4, 3, 2, [0.5, -2]);
    expect(sums[0]).toBe(0);
    expect(sums[1]).toBeCloseTo(Math.log(1 / 2) + Math.log(1 / 3), 6);
    expect([...counts]).toEqual([0, 2]);
    // dSeq[1] = −2: row 0 gets −2 · (onehot(2) − softmax).
    expect(maxAbsDiff(dLogits.subarray(0, 6), [2 / 6, 4 / 6, -1, -4 / 3, 2 / 3, 2 / 3])).toBeLessThan(1e-6);
    expect(maxAbsDiff(dLogits.subarray(6), new Float32Array(6))).toBe(0);
  });

  it('its hidden-state gradient equals central finite differences of Σ dSeq · sums (f64)', () => {
    const c = randomCase(13, 7, 29, 3, 101);
    const lmHead = Float32Array.from(c.lmHead);
    const { dHidden } = sequenceLogprobHiddenRef(c.hidden, lmHead, c.targets, c.seqOf, c.N, c.V, c.H, c.S, c.dSeq);
    // Inputs are f32: an exact power-of-two step keeps the perturbed values exact.
    const step = 2 ** -10;
    const hidden = Float32Array.from(c.hidden);
    let checked = 0;
    for (let i = 0; i < hidden.length; i++) {
      const x = hidden[i]!;
      hidden[i] = x + step; const up = weightedSum(c, hidden, lmHead);
      hidden[i] = x - step; const down = weightedSum(c, hidden, lmHead);
      hidden[i] = x;
      const fd = (up - down) / (2 * step);
      expect(Math.abs(dHidden[i]! - fd), `element ${i}: ${dHidden[i]} vs ${fd}`).toBeLessThan(2e-4);
      if (dHidden[i] !== 0) checked++;
    }
    // Uncounted rows have zero gradient; the others must have been checked for real.
    expect(checked).toBeGreaterThan(hidden.length / 3);
  });

  it('token cross-entropy is the special case dSeq = −invCount over one sequence', () => {
    const c = randomCase(17, 6, 23, 1, 111);
    c.seqOf.fill(0);
    const counted = c.targets.filter((t) => t >= 0).length;
    const seq = sequenceLogprobHiddenRef(c.hidden, c.lmHead, c.targets, c.seqOf, c.N, c.V, c.H, 1, [-1 / counted]);
    const ce = crossEntropyHiddenRef(c.hidden, c.lmHead, c.targets, c.N, c.V, c.H);
    expect(Math.abs(-seq.sums[0]! / counted - ce.loss)).toBeLessThan(1e-12);
    expect(maxAbsDiff(seq.dHidden, ce.dHidden)).toBeLessThan(1e-7);
  });
});

async function runFused(gpu: Gpu, c: Case, dtype: WeightDType, chunk?: number) {
  const sums = gpu.storage(c.S * 4);
  const counts = gpu.storage(c.S * 4);
  const dHidden = gpu.storage(c.N * c.H * 4);
  const dSeq = gpu.upload(c.dSeq);
  const forward = new Program(gpu);
  const backward = new Program(gpu);
  const f = recordSequenceLogprobForward(forward, {
    hidden: gpu.upload(c.hidden), lmHead: matrixFromF32(gpu, c.lmHead, c.V, c.H, dtype, 'lm_head'),
    targets: gpu.upload(c.targets), seqOf: gpu.upload(c.seqOf), N: c.N, sequences: c.S, sums, counts, chunk,
  });
  recordSequenceLogprobBackward(backward, f, dSeq, dHidden);
  forward.run();
  backward.run();
  return {
    sums: await gpu.readF32(sums, c.S), counts: await gpu.readF32(counts, c.S),
    dHidden: await gpu.readF32(dHidden, c.N * c.H), logp: await gpu.readF32(f.logp, c.N),
  };
}

async function expectMatches(gpu: Gpu, c: Case, dtype: WeightDType, chunk?: number): Promise<void> {
  const w = asStored(c.lmHead, dtype);
  const ref = sequenceLogprobHiddenRef(c.hidden, w, c.targets, c.seqOf, c.N, c.V, c.H, c.S, c.dSeq);
  // Every sequence must have tokens, or the case would not test the per-sequence split.
  expect(Math.min(...ref.counts)).toBeGreaterThan(0);
  const got = await runFused(gpu, c, dtype, chunk);
  expect(maxAbsDiff(got.counts, ref.counts)).toBe(0);
  expect(maxRelDiff(got.sums, ref.sums)).toBeLessThan(1e-5);
  expect(maxRelDiff(got.dHidden, ref.dHidden)).toBeLessThan(1e-5);
}

describe('fused sequence log-probs on the GPU', () => {
  let gpu: Gpu;
  beforeAll(async () => { gpu = await testGpu(); });
  afterAll(() => gpu?.destroy());

  for (const dtype of ['f32', 'bf16'] as const) {
    it(`match the reference: 301 tokens in 5 sequences x 203 vocab in chunks of 50 (${dtype} lm head)`, async () => {
      await expectMatches(gpu, randomCase(301, 24, 203, 5, 7), dtype, 50);
    });
  }

  it('match the reference with the default chunk (one chunk) and with another dSeq', async () => {
    const c = randomCase(37, 16, 70, 3, 17);
    await expectMatches(gpu, c, 'f32');
    c.dSeq = randArray(3, 18, 2);
    await expectMatches(gpu, c, 'f32');
  });
});

describe('fused sequence log-probs with the lm head split into parts', () => {
  let gpu: Gpu;
  // 8 KiB bindings: an f32 lm head of width 24 splits every 85 rows, across the 50-row chunks.
  beforeAll(async () => { gpu = await testGpu({ maxBindingBytes: 8192 }); });
  afterAll(() => gpu?.destroy());

  it('match the reference (f32, chunks of 50)', async () => {
    await expectMatches(gpu, randomCase(37, 24, 203, 4, 27), 'f32', 50);
  });
});
