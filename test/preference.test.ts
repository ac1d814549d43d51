// Preference losses: the gradients with respect to the per-sequence log-prob sums against central finite
// differences on an odd batch (3 pairs, uneven token counts), pref_ftx included; the fixed values of each
// formula on one hand-worked pair; KTO likewise. The chain through the model is checked by parity.test.ts
// (preference.safetensors: dpo, orpo, simpo gradients of every LoRA tensor).
import { describe, expect, it } from 'vitest';
import { ktoLoss, preferenceLoss, PREF_LOSSES, type KtoExample, type PairLogps, type PreferenceSettings } from '../src/train/preference.js';

const policy: PairLogps[] = [
  { chosen: { sum: -7.3, count: 5 }, rejected: { sum: -9.1, count: 7 } },
  { chosen: { sum: -12.4, count: 11 }, rejected: { sum: -6.2, count: 3 } },
  { chosen: { sum: -3.7, count: 2 }, rejected: { sum: -15.9, count: 13 } },
];
const reference: PairLogps[] = [
  { chosen: { sum: -7.9, count: 5 }, rejected: { sum: -8.6, count: 7 } },
  { chosen: { sum: -11.8, count: 11 }, rejected: { sum: -6.9, count: 3 } },
  { chosen: { sum: -4.4, count: 2 }, rejected: { sum: -15.1, count: 13 } },
];

function withSum(pairs: PairLogps[], i: number, side: 0 | 1, delta: number): PairLogps[] {
  return pairs.map((p, j) => (j !== i ? p : side === 0 ? { ...p, chosen: { ...p.chosen, sum: p.chosen.sum + delta } } : { ...p, rejected: { ...p.rejected, sum: p.rejected.sum + delta } }));
}

describe('preference losses', () => {
  for (const loss of PREF_LOSSES) {
    for (const ftx of [0, 0.7]) {
      it(`${loss} (pref_ftx ${ftx}): gradient = finite differences`, () => {
        const st: PreferenceSettings = { loss, beta: loss === 'simpo' ? 2.5 : 0.3, ftx, simpoGamma: 0.5 };
        const out = preferenceLoss(st, policy, reference);
        expect(Number.isFinite(out.loss)).toBe(true);
        const h = 1e-5;
        let nonzero = 0;
        for (let i = 0; i < policy.length; i++) for (const side of [0, 1] as const) {
          const fd = (preferenceLoss(st, withSum(policy, i, side, h), reference).loss - preferenceLoss(st, withSum(policy, i, side, -h), reference).loss) / (2 * h);
          expect(out.dSums[i]![side]).toBeCloseTo(fd, 7);
          if (Math.abs(fd) > 1e-6) nonzero++;
        }
        expect(nonzero).toBeGreaterThanOrEqual(3);
      });
    }
  }

  it('each formula on one pair, worked by hand', () => {
    const p = [{ chosen: { sum: -4, count: 2 }, rejected: { sum: -9, count: 3 } }];
    const r = [{ chosen: { sum: -5, count: 2 }, rejected: { sum: -8, count: 3 } }];
    const st = (loss: PreferenceSettings['loss'], beta: number): PreferenceSettings => ({ loss, beta, ftx: 0, simpoGamma: 0.5 });
    const nls = (x: number) => Math.log(1 + Math.exp(-x));
    // z on sums = (−4 + 9) − (−5 + 8) = 2; on means = (−2 + 3) − (−2.5 + 8/3) = 5/6.
    expect(preferenceLoss(st('sigmoid', 0.1), p, r).loss).toBeCloseTo(nls(0.2), 12);
    expect(preferenceLoss(st('hinge', 0.1), p, r).loss).toBeCloseTo(0.8, 12);
    expect(preferenceLoss(st('ipo', 0.1), p, r).loss).toBeCloseTo((5 / 6 - 5) ** 2, 12);
    expect(preferenceLoss(st('simpo', 2), p, r).loss).toBeCloseTo(nls(2 * (1 - 0.25)), 12);
    const odds = 1 - (Math.log(1 - Math.exp(-2)) - Math.log(1 - Math.exp(-3)));
    expect(preferenceLoss(st('orpo', 0.1), p, r).loss).toBeCloseTo(2 + 0.1 * nls(odds), 12);
    const m = preferenceLoss(st('sigmoid', 0.1), p, r).metrics;
    expect(m['rewards/chosen']).toBeCloseTo(0.1, 12);
    expect(m['rewards/rejected']).toBeCloseTo(-0.1, 12);
    expect(m['rewards/margins']).toBeCloseTo(0.2, 12);
    expect(m['rewards/accuracies']).toBe(1);
    expect(m['logps/chosen']).toBe(-4);
    expect(m['logps/rejected']).toBe(-9);
  });
});

describe('KTO', () => {
  const examples: KtoExample[] = [
    { policy: { sum: -6.1, count: 4 }, reference: { sum: -6.8, count: 4 }, desirable: true },
    { policy: { sum: -11.3, count: 9 }, reference: { sum: -10.2, count: 9 }, desirable: false },
    { policy: { sum: -2.9, count: 3 }, reference: { sum: -3.3, count: 3 }, desirable: true },
    { policy: { sum: -8.8, count: 5 }, reference: { sum: -9.4, count: 5 }, desirable: false },
    { policy: { sum: -5.5, count: 7 }, reference: { sum: -5.1, count: 7 }, desirable: true },
  ];
  const klPolicy = [-20.1, -18.7, -22.4], klReference = [-20.6, -19.3, -22.1];
  for (const ftx of [0, 0.4]) {
    it(`gradient = finite differences (pref_ftx ${ftx})`, () => {
      const st = { beta: 0.3, chosenWeight: 1.3, rejectedWeight: 0.8, ftx };
      const out = ktoLoss(st, examples, klPolicy, klReference);
      expect(out.kl).toBeCloseTo((0.5 + 0.6 - 0.3) / 3, 12);
      const h = 1e-5;
      for (let i = 0; i < examples.length; i++) {
        const shifted = (d: number) => examples.map((e, j) => (j === i ? { ...e, policy: { ...e.policy, sum: e.policy.sum + d } } : e));
        const fd = (ktoLoss(st, shifted(h), klPolicy, klReference).loss - ktoLoss(st, shifted(-h), klPolicy, klReference).loss) / (2 * h);
        expect(out.dSums[i]).toBeCloseTo(fd, 7);
        expect(Math.abs(fd)).toBeGreaterThan(1e-4);
      }
    });
  }
  it("pref_ftx adds LLaMA-Factory's term: ftx · mean over desirable of (−mean log-prob) · examples / desirable", () => {
    const st = { beta: 0.3, chosenWeight: 1.3, rejectedWeight: 0.8, ftx: 0 };
    const desirable = examples.filter((e) => e.desirable);
    const sft = desirable.reduce((a, e) => a - e.policy.sum / e.policy.count, 0) / desirable.length;
    const added = ktoLoss({ ...st, ftx: 0.4 }, examples, klPolicy, klReference).loss - ktoLoss(st, examples, klPolicy, klReference).loss;
    expect(added).toBeCloseTo((0.4 * sft * examples.length) / desirable.length, 12);
  });
  it('clamps a negative KL estimate at 0', () => {
    expect(ktoLoss({ beta: 0.1, chosenWeight: 1, rejectedWeight: 1, ftx: 0 }, examples, [-5], [-4]).kl).toBe(0);
  });
});
