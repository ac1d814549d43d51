import { describe, expect, it } from 'vitest';
import { learningRate, SCHEDULER_TYPES, warmupSteps, type ScheduleOptions } from '../src/train/schedule.js';

const lrs = (steps: number[], o: ScheduleOptions) => steps.map((s) => learningRate(s, o));

function expectClose(got: number[], want: number[]): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => expect(g, `entry ${i}`).toBeCloseTo(want[i]!, 12));
}

describe('learningRate', () => {
  it('constant ignores warm-up', () => {
    expectClose(lrs([0, 1, 5, 50], { type: 'constant', baseLr: 2e-4, warmupSteps: 10, totalSteps: 20 }), [2e-4, 2e-4, 2e-4, 2e-4]);
  });

  it('constant_with_warmup ramps from 0 over the warm-up steps', () => {
    const o: ScheduleOptions = { type: 'constant_with_warmup', baseLr: 1, warmupSteps: 4, totalSteps: 20 };
    expectClose(lrs([0, 1, 2, 3, 4, 19], o), [0, 0.25, 0.5, 0.75, 1, 1]);
  });

  it('linear: warm-up, then decay to 0 at totalSteps, never negative', () => {
    const o: ScheduleOptions = { type: 'linear', baseLr: 1e-3, warmupSteps: 2, totalSteps: 10 };
    // (10 - s) / 8 after warm-up.
    expectClose(lrs([0, 1, 2, 6, 9, 10, 12], o), [0, 5e-4, 1e-3, 5e-4, 1.25e-4, 0, 0]);
    expectClose(lrs([0, 1, 3], { ...o, warmupSteps: 0, totalSteps: 4 }), [1e-3, 7.5e-4, 2.5e-4]);
  });

  it('cosine: half a period after warm-up', () => {
    const o: ScheduleOptions = { type: 'cosine', baseLr: 1, warmupSteps: 2, totalSteps: 10 };
    // progress = (s - 2) / 8; 0.5 (1 + cos(pi progress)); past the end the cosine rises again, as in transformers.
    const c45 = Math.SQRT1_2;
    expectClose(lrs([1, 2, 4, 6, 8, 10, 12], o), [0.5, 1, 0.5 * (1 + c45), 0.5, 0.5 * (1 - c45), 0, 0.5 * (1 - c45)]);
  });

  it('cosine_with_min_lr floors at minLrRate', () => {
    const o: ScheduleOptions = { type: 'cosine_with_min_lr', baseLr: 2, warmupSteps: 0, totalSteps: 4, minLrRate: 0.1 };
    // 2 * (cosine * 0.9 + 0.1): cosine = 1, 0.5, 0 at steps 0, 2, 4.
    expectClose(lrs([0, 2, 4], o), [2, 1.1, 0.2]);
    expect(() => learningRate(1, { ...o, minLrRate: undefined })).toThrow(/min_lr/);
  });

  it('every type reaches the base rate right after warm-up', () => {
    for (const type of SCHEDULER_TYPES) {
      expect(learningRate(3, { type, baseLr: 0.5, warmupSteps: 3, totalSteps: 30, minLrRate: 0 })).toBeCloseTo(0.5, 12);
    }
  });
});

describe('warmupSteps', () => {
  it('takes warmup_steps when positive, else ceil(ratio * total)', () => {
    expect(warmupSteps(100, 5, 0.5)).toBe(5);
    expect(warmupSteps(100, 0, 0.1)).toBe(10);
    expect(warmupSteps(7, 0, 0.1)).toBe(1);
    expect(warmupSteps(10, 0, 0)).toBe(0);
    // 100 * 0.07 is 7.000000000000001 in doubles, so Python's math.ceil gives 8 too.
    expect(warmupSteps(100, 0, 0.07)).toBe(8);
  });

  it('rejects negative or fractional steps and ratios outside [0, 1]', () => {
    expect(() => warmupSteps(10, -1, 0)).toThrow(/warmup_steps/);
    expect(() => warmupSteps(10, 1.5, 0)).toThrow(/warmup_steps/);
    expect(() => warmupSteps(10, 0, 1.5)).toThrow(/warmup_ratio/);
  });
});
