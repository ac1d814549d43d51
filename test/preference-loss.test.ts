// The GPU preference loss: its reference against train/preference.ts (LLaMA-Factory's losses, f64), and the
// kernel against its reference on odd pair counts (more pairs than the workgroup, padding pairs), every kind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import {
  PREFERENCE_KINDS, PREFERENCE_STATS, preferenceLossRef, preferenceMetricsOf, recordPreferenceLoss, type PreferenceKind, type PreferenceLossSettings,
} from '../src/kernels/preference-loss.js';
import { ktoLoss, preferenceLoss, type PairLogps } from '../src/train/preference.js';
import { rng, testGpu } from './helpers.js';

interface Case {
  sums: Float32Array;
  counts: Float32Array;
  refSums: Float32Array;
  desirable: Uint32Array;
}

/** P pairs of 2P sequences: counts 1..40, sums around −0.4·count (means in (−1, 0) as orpo needs); `padding` pairs with count 0. */
function randomCase(P: number, seed: number, padding: number[] = []): Case {
  const r = rng(seed);
  const counts = Float32Array.from({ length: 2 * P }, (_, s) => (padding.includes(s % P) ? 0 : 1 + Math.floor(r() * 40)));
  const sums = Float32Array.from(counts, (c) => (c === 0 ? 0 : -c * (0.05 + 0.8 * r())));
  const refSums = Float32Array.from(sums, (v, s) => (counts[s] === 0 ? 0 : v + (r() - 0.5) * 3));
  const desirable = Uint32Array.from({ length: P }, () => (r() < 0.5 ? 1 : 0));
  return { sums, counts, refSums, desirable };
}

function settings(kind: PreferenceKind, ftx = 0): PreferenceLossSettings {
  return { kind, beta: kind === 'ipo' ? 0.5 : 0.3, ftx, gamma: 0.7, chosenWeight: 1.3, rejectedWeight: 0.8, scale: 0.5 };
}

describe('preferenceLossRef', () => {
  for (const kind of PREFERENCE_KINDS.filter((k) => k !== 'kto')) {
    it(`${kind}: loss, dSeq and metrics as preferenceLoss`, () => {
      const c = randomCase(7, 3);
      for (const ftx of [0, 0.4]) {
        const st = settings(kind, ftx);
        const stats = new Float64Array(PREFERENCE_STATS);
        const dSeq = preferenceLossRef(st, c.sums, c.counts, c.refSums, c.desirable, stats);
        const P = 7;
        const pair = (v: Float32Array, i: number): PairLogps => ({ chosen: { sum: v[i]!, count: c.counts[i]! }, rejected: { sum: v[P + i]!, count: c.counts[P + i]! } });
        const policy = Array.from({ length: P }, (_, i) => pair(c.sums, i));
        const reference = Array.from({ length: P }, (_, i) => pair(c.refSums, i));
        const want = preferenceLoss({ loss: kind as Exclude<PreferenceKind, 'kto'>, beta: st.beta, ftx, simpoGamma: st.gamma }, policy, reference);
        expect(stats[0]).toBeCloseTo(want.loss * st.scale, 10);
        for (let i = 0; i < P; i++) {
          expect(dSeq[i]).toBeCloseTo(want.dSums[i]![0] * st.scale, 10);
          expect(dSeq[P + i]).toBeCloseTo(want.dSums[i]![1] * st.scale, 10);
        }
        const m = preferenceMetricsOf(kind, stats);
        for (const [k, v] of Object.entries(want.metrics)) expect(m[k]).toBeCloseTo(v, 10);
      }
    });
  }

  it('kto: loss, dSeq and metrics as ktoLoss; KL rows get no gradient', () => {
    const P = 9;
    const c = randomCase(P, 5);
    const st = settings('kto', 0.4);
    const stats = new Float64Array(PREFERENCE_STATS);
    const dSeq = preferenceLossRef(st, c.sums, c.counts, c.refSums, c.desirable, stats);
    const examples = Array.from({ length: P }, (_, i) => ({
      policy: { sum: c.sums[i]!, count: c.counts[i]! }, reference: { sum: c.refSums[i]!, count: c.counts[i]! }, desirable: c.desirable[i] === 1,
    }));
    const want = ktoLoss({ beta: st.beta, chosenWeight: st.chosenWeight, rejectedWeight: st.rejectedWeight, ftx: st.ftx }, examples, [...c.sums.subarray(P)], [...c.refSums.subarray(P)]);
    expect(stats[0]).toBeCloseTo(want.loss * st.scale, 10);
    for (let i = 0; i < P; i++) {
      expect(dSeq[i]).toBeCloseTo(want.dSums[i]! * st.scale, 10);
      expect(dSeq[P + i]).toBe(0);
    }
    expect(stats[9]).toBeCloseTo(want.kl, 10);
    const m = preferenceMetricsOf('kto', stats);
    for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/margins', 'logps/chosen', 'logps/rejected'] as const) expect(m[k]).toBeCloseTo(want.metrics[k], 10);
  });

  it('leaves padding pairs out of the mean and gives them no gradient', () => {
    const st = settings('sigmoid');
    const full = randomCase(5, 8, [1, 3]);
    const stats = new Float64Array(PREFERENCE_STATS);
    const dSeq = preferenceLossRef(st, full.sums, full.counts, full.refSums, full.desirable, stats);
    expect([dSeq[1], dSeq[3], dSeq[6], dSeq[8]]).toEqual([0, 0, 0, 0]);
    const keep = [0, 2, 4];
    const pick = (v: Float32Array) => Float32Array.from([...keep.map((i) => v[i]!), ...keep.map((i) => v[5 + i]!)]);
    const small = new Float64Array(PREFERENCE_STATS);
    const dSmall = preferenceLossRef(st, pick(full.sums), pick(full.counts), pick(full.refSums), full.desirable, small);
    expect(stats[0]).toBeCloseTo(small[0]!, 12);
    expect(dSeq[2]).toBeCloseTo(dSmall[1]!, 12);
  });
});

describe('recordPreferenceLoss (GPU)', () => {
  let gpu: Gpu;
  beforeAll(async () => {
    gpu = await testGpu();
  });
  afterAll(async () => {
    await gpu.destroy();
  });

  // 67 pairs: more than one pass of the 64-thread workgroup; two padding pairs.
  for (const kind of PREFERENCE_KINDS) {
    it(`${kind}: dSeq and accumulated stats as the reference (67 pairs, 2 padding, ftx 0.4)`, async () => {
      const P = 67;
      const c = randomCase(P, 11 + PREFERENCE_KINDS.indexOf(kind), [5, 66]);
      const st = settings(kind, 0.4);
      const buf = (a: Float32Array | Uint32Array) => gpu.upload(a, 'test');
      const sums = buf(c.sums), counts = buf(c.counts), refSums = buf(c.refSums), desirable = buf(c.desirable);
      const dSeq = gpu.storage(2 * P * 4, 'dSeq');
      const stats = buf(new Float32Array(PREFERENCE_STATS).fill(0.25));
      const prog = new Program(gpu);
      recordPreferenceLoss(prog, { sums, counts, refSums, desirable, dSeq, stats, pairs: P, settings: st });
      prog.run();
      prog.run(); // accumulates twice
      const want = new Float64Array(PREFERENCE_STATS).fill(0.25);
      let wantD = preferenceLossRef(st, c.sums, c.counts, c.refSums, c.desirable, want);
      wantD = preferenceLossRef(st, c.sums, c.counts, c.refSums, c.desirable, want);
      const gotD = await gpu.readF32(dSeq, 2 * P);
      const gotS = await gpu.readF32(stats, PREFERENCE_STATS);
      const scaleD = Math.max(...wantD.map(Math.abs));
      expect(scaleD).toBeGreaterThan(1e-4);
      for (let s = 0; s < 2 * P; s++) expect(Math.abs(gotD[s]! - wantD[s]!)).toBeLessThanOrEqual(2e-5 * scaleD + 1e-7);
      for (let j = 0; j < PREFERENCE_STATS; j++) expect(Math.abs(gotS[j]! - want[j]!)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(want[j]!)));
    });
  }
});
