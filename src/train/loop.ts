// The one training loop of the CLI (run.ts), the browser worker (web/worker.ts) and the training benchmark: optimizer
// steps of `micro` micro-batches each (gradient accumulation), the learning rate per step, and readbacks only at
// logging steps (the mean loss and the optimizer's counters). A step whose gradient is not finite is skipped on
// the GPU by AdamW's guard; the loop stops with a UserError when the counters show 5 bad steps in a row.
// No Node API here: the worker bundles it.
import { UserError } from '../errors.js';
import type { AdamWStats } from '../kernels/adamw.js';
import type { StepBatch } from './trainer.js';

/** One logging step, with LLaMA-Factory's names (trainer_log.jsonl). */
export interface LogEntry {
  current_steps: number;
  total_steps: number;
  loss: number;
  lr: number;
  grad_norm: number;
  epoch: number;
  skipped_steps: number;
  tokens_per_second: number;
  eval_loss?: number;
  /** kto: the KL estimate (mean over the logged micro-batches). */
  kl?: number;
  /**
   * Preference stages: rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies (dpo), logps/chosen,
   * logps/rejected, as LLaMA-Factory logs them.
   */
  [preferenceMetric: `rewards/${string}` | `logps/${string}`]: number;
}

/** Consecutive non-finite optimizer steps after which training stops. */
export const MAX_CONSECUTIVE_BAD_STEPS = 5;

export interface LoopPlan {
  /** Optimizer steps of the whole run; the loop runs steps [start, totalSteps). */
  totalSteps: number;
  /** Micro-batches per optimizer step (gradient_accumulation_steps). */
  microPerStep: number;
  /** Micro-batch m of the run (a pure function of m, so a resumed run sees the same data). */
  microBatch(m: number): StepBatch;
  /** Learning rate of 0-based optimizer step `step`. */
  learningRate(step: number): number;
  /** Log (read the loss back) every this many steps, and at the last. */
  logEvery: number;
  /** Micro-batches per epoch, for the logged epoch. */
  perEpoch: number;
  /** Evaluate every this many steps (and at the last) when `evaluate` is given. */
  evalEvery?: number;
  evaluate?(): Promise<number>;
  /** Call `save` every this many steps (not at the last: the caller saves the result). */
  saveEvery?: number;
}

export interface LoopHooks {
  /** Before each step: throw to stop (a lost device). */
  check?(): void;
  /** Checked before each step: true ends the loop early without an error (a stop button). */
  stop?(): boolean;
  onStep?(done: number, total: number): void;
  onLog?(entry: LogEntry): void | Promise<void>;
  save?(done: number): Promise<void>;
}

export interface LoopResult {
  /** Optimizer steps done when the loop ended (totalSteps unless stopped). */
  steps: number;
  /** The entries logged by this call. */
  log: LogEntry[];
}

/** What the loop drives: LoraTrainer (and any trainer with the same step, loss and optimizer counters). */
export interface LoopTrainer {
  step(micro: StepBatch[], t: number, lr: number): void;
  readMeanLoss(): Promise<number>;
  /** Metrics read with the last `readMeanLoss` (the preference stages' rewards), merged into the log entry. */
  takeMetrics?(): Record<string, number> | undefined;
  optimizer: { readStats(): Promise<AdamWStats> };
}

/** Run optimizer steps start..totalSteps−1 (1-based step t = index + 1, as AdamW and the dropout masks count). */
export async function trainSteps(trainer: LoopTrainer, plan: LoopPlan, hooks: LoopHooks = {}, start = 0): Promise<LoopResult> {
  const log: LogEntry[] = [];
  let tokensSinceLog = 0;
  let timeSinceLog = performance.now();
  let step = start;
  for (; step < plan.totalSteps; step++) {
    hooks.check?.();
    if (hooks.stop?.()) break;
    const micro: StepBatch[] = [];
    for (let k = 0; k < plan.microPerStep; k++) micro.push(plan.microBatch(step * plan.microPerStep + k));
    const lr = plan.learningRate(step);
    trainer.step(micro, step + 1, lr);
    tokensSinceLog += micro.reduce((n, b) => n + b.inputIds.length, 0);
    const done = step + 1;
    hooks.onStep?.(done, plan.totalSteps);
    const last = done === plan.totalSteps;
    const evalNow = plan.evaluate !== undefined && (done % (plan.evalEvery ?? plan.logEvery) === 0 || last);
    if (done % plan.logEvery === 0 || evalNow || last) {
      const loss = await trainer.readMeanLoss();
      const metrics = trainer.takeMetrics?.();
      const stats = await trainer.optimizer.readStats();
      const now = performance.now();
      if (stats.consecutiveBad >= MAX_CONSECUTIVE_BAD_STEPS) {
        throw new UserError(`training stopped: ${stats.consecutiveBad} optimizer steps in a row had a NaN/Inf loss or gradient (lower learning_rate, or check the data)`);
      }
      const entry: LogEntry = {
        current_steps: done, total_steps: plan.totalSteps, loss, ...metrics, lr, grad_norm: stats.gradNorm,
        epoch: (done * plan.microPerStep) / plan.perEpoch, skipped_steps: stats.skippedSteps,
        tokens_per_second: (tokensSinceLog * 1000) / (now - timeSinceLog),
      };
      if (evalNow) entry.eval_loss = await plan.evaluate!();
      log.push(entry);
      await hooks.onLog?.(entry);
      tokensSinceLog = 0;
      timeSinceLog = performance.now();
    }
    if (plan.saveEvery !== undefined && done % plan.saveEvery === 0 && !last) await hooks.save?.(done);
  }
  return { steps: step, log };
}
