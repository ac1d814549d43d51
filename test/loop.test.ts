// The shared training loop's bookkeeping, with a recording trainer (the GPU step is tested elsewhere): which
// micro-batches make each optimizer step, AdamW's 1-based step and learning rate, readbacks only at logging steps,
// evaluation and checkpoint cadence, resuming mid-run, the stop hook, and the stop after 5 bad steps in a row.
import { describe, expect, it } from 'vitest';
import { MAX_CONSECUTIVE_BAD_STEPS, trainSteps, type LoopPlan, type LoopTrainer } from '../src/train/loop.js';
import type { StepBatch } from '../src/train/trainer.js';
import { UserError } from '../src/errors.js';

/** A batch whose first id is its micro-batch index m. */
function batch(m: number): StepBatch {
  return { inputIds: Uint32Array.of(m, 0, 0), positions: new Uint32Array(3), segments: new Uint32Array(3), targets: new Int32Array(3) };
}

/** Records every call; `bad(t)` says whether optimizer step t had a non-finite gradient (AdamW's guard counts it). */
function recordingTrainer(bad: (t: number) => boolean = () => false) {
  const steps: { micro: number[]; t: number; lr: number }[] = [];
  let reads = 0;
  let skipped = 0;
  let consecutive = 0;
  const trainer: LoopTrainer = {
    step(micro, t, lr) {
      steps.push({ micro: micro.map((b) => b.inputIds[0]!), t, lr });
      if (bad(t)) { skipped++; consecutive++; } else consecutive = 0;
    },
    async readMeanLoss() { reads++; return 10 - steps.length; },
    optimizer: { readStats: async () => ({ gradNorm: 1, clipScale: 1, skippedSteps: skipped, consecutiveBad: consecutive }) },
  };
  return { trainer, steps, reads: () => reads };
}

function plan(o: Partial<LoopPlan> = {}): LoopPlan {
  return { totalSteps: 7, microPerStep: 3, perEpoch: 6, logEvery: 3, microBatch: batch, learningRate: (s) => 0.1 * (s + 1), ...o };
}

describe('trainSteps', () => {
  it('accumulates micro-batches per step, counts t from 1, and reads back only at logging steps and the last', async () => {
    const r = recordingTrainer();
    const result = await trainSteps(r.trainer, plan());
    expect(r.steps.map((s) => s.micro)).toEqual(Array.from({ length: 7 }, (_, s) => [3 * s, 3 * s + 1, 3 * s + 2]));
    expect(r.steps.map((s) => s.t)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(r.steps.map((s) => s.lr)).toEqual([1, 2, 3, 4, 5, 6, 7].map((k) => 0.1 * k));
    expect(result.steps).toBe(7);
    expect(result.log.map((e) => e.current_steps)).toEqual([3, 6, 7]);
    expect(r.reads()).toBe(3);
    expect(result.log[1]).toMatchObject({ total_steps: 7, loss: 4, lr: 0.1 * 6, epoch: 3, skipped_steps: 0 });
  });

  it('evaluates at its own interval, saves between steps (not at the last), and resumes at a step', async () => {
    const r = recordingTrainer();
    const saved: number[] = [];
    let evaluations = 0;
    const result = await trainSteps(r.trainer, plan({ totalSteps: 9, evalEvery: 4, saveEvery: 3, evaluate: async () => ++evaluations }), {
      save: async (done) => { saved.push(done); },
    }, 2);
    expect(r.steps[0]).toMatchObject({ t: 3, micro: [6, 7, 8] });
    expect(result.log.map((e) => [e.current_steps, e.eval_loss])).toEqual([[3, undefined], [4, 1], [6, undefined], [8, 2], [9, 3]]);
    expect(saved).toEqual([3, 6]);
  });

  it('skips bad steps and stops with a UserError at the logging step that sees 5 in a row', async () => {
    const r = recordingTrainer((t) => t >= 4);
    const logged: number[] = [];
    const run = trainSteps(r.trainer, plan({ totalSteps: 20, logEvery: 2 }), { onLog: (e) => void logged.push(e.skipped_steps) });
    await expect(run).rejects.toThrow(UserError);
    await expect(run).rejects.toThrow(/5 optimizer steps in a row had a NaN\/Inf/);
    // From step 4 on every step is bad: the logs at 2, 4 and 6 see 0, 1 and 3 skipped; the one at 8 sees 5 in a row.
    expect(logged).toEqual([0, 1, 3]);
    expect(r.steps.length).toBe(8);
    expect(MAX_CONSECUTIVE_BAD_STEPS).toBe(5);
  });

  it('a stop request ends the loop before the next step, without an error', async () => {
    const r = recordingTrainer();
    const result = await trainSteps(r.trainer, plan({ logEvery: 1 }), { stop: () => r.steps.length === 4 });
    expect(result.steps).toBe(4);
    expect(result.log.map((e) => e.current_steps)).toEqual([1, 2, 3, 4]);
  });
});
