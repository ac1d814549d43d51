// Learning-rate schedules as transformers' get_scheduler builds them: LambdaLR multiplies the base rate by a
// factor of the 0-based optimizer step, so the first update uses step 0 (rate 0 when there is a warm-up).

export type SchedulerType = 'constant' | 'constant_with_warmup' | 'linear' | 'cosine' | 'cosine_with_min_lr';

export const SCHEDULER_TYPES: readonly SchedulerType[] = ['constant', 'constant_with_warmup', 'linear', 'cosine', 'cosine_with_min_lr'];

export interface ScheduleOptions {
  type: SchedulerType;
  baseLr: number;
  warmupSteps: number;
  totalSteps: number;
  /** cosine_with_min_lr only: the floor as a fraction of baseLr (transformers' min_lr_rate, or min_lr / baseLr). */
  minLrRate?: number;
}

/** Warm-up length as TrainingArguments.get_warmup_steps: warmup_steps when positive, else ceil(ratio × total). */
export function warmupSteps(totalSteps: number, warmupSteps: number, warmupRatio: number): number {
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0) throw new Error(`warmup_steps must be a non-negative integer, got ${warmupSteps}`);
  if (!(warmupRatio >= 0 && warmupRatio <= 1)) throw new Error(`warmup_ratio must be in [0, 1], got ${warmupRatio}`);
  return warmupSteps > 0 ? warmupSteps : Math.ceil(totalSteps * warmupRatio);
}

/** Learning rate for the 0-based optimizer step `step`. */
export function learningRate(step: number, o: ScheduleOptions): number {
  return o.baseLr * lrFactor(step, o);
}

function lrFactor(step: number, o: ScheduleOptions): number {
  if (o.type === 'constant') return 1;
  const w = o.warmupSteps;
  if (step < w) return step / Math.max(1, w);
  if (o.type === 'constant_with_warmup') return 1;
  if (o.type === 'linear') return Math.max(0, (o.totalSteps - step) / Math.max(1, o.totalSteps - w));
  const progress = (step - w) / Math.max(1, o.totalSteps - w);
  // num_cycles = 0.5: half a cosine period from 1 down to 0 over the steps after warm-up.
  const cosine = 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress));
  if (o.type === 'cosine') return Math.max(0, cosine);
  if (o.minLrRate === undefined) throw new Error('cosine_with_min_lr needs min_lr or min_lr_rate');
  return Math.max(0, cosine * (1 - o.minLrRate) + o.minLrRate);
}
