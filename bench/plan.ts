// `--plan`: what one optimizer step of a training job does (dispatches, FLOPs, peak bytes), counted from the programs the trainer records on
// the memory plan's counting Gpu (src/gpu/dry-run.ts): no step runs and no GPU is needed. By default for an
// H100's limits (a 2 GiB − 4 binding, 80 GB), so the figures are those of the target GPU, not of this machine.
import type { WeightDType } from '../src/gpu/matrix.js';
import type { Dispatch, Program } from '../src/gpu/program.js';
import { PROJECTIONS } from '../src/model/family.js';
import { chooseKeepAttention, planTrainingStep } from '../src/train/memory-plan.js';
import { benchConfig } from './model.js';
import { kernelName, programCost, round } from './profile.js';
import type { StepShape } from './train.js';

/** An H100's largest storage binding (2 GiB − 4, as Dawn reports it) and its memory. */
export const H100_LIMITS = { maxBindingBytes: 2 ** 31 - 4, memoryBytes: 80e9 };

export interface PlanOptions extends StepShape {
  maxBindingBytes: number;
  memoryBytes: number;
}

export interface PlanResult {
  bench: 'plan';
  size: string;
  batch: number;
  seq: number;
  rank: number;
  lora_targets: string[];
  dtype: WeightDType;
  recompute: boolean;
  /** Each layer's attention output and lse kept through the recompute, as the trainer would choose with `memory_bytes`. */
  keep_attention: boolean;
  max_binding_bytes: number;
  memory_bytes: number;
  /** Dispatches of one optimizer step with gradient accumulation 1 (zeroing, graph, loss sum, AdamW). */
  dispatches_per_step: number;
  /** FLOPs and least bytes moved of that step, as the kernels' launchers count them (uncounted kernels add 0). */
  flops_per_step: number;
  bytes_per_step: number;
  /** Dispatches per kernel whose launcher counts no cost (so flops_per_step leaves them out). */
  uncounted_dispatches: Record<string, number>;
  /** Peak bytes of live GPU buffers, by the memory plan. */
  planned_peak_bytes: number;
  planned_peak_gib: number;
  fits: boolean;
  memory: { weights: number; activations: number; lora: number; optimizer: number; scratch: number };
  /** Dispatches per kernel (layer numbers folded), most first. */
  dispatches_by_kernel: Record<string, number>;
}

/** Dispatches of `programs` (one run each, those `which` picks) per kernel name, most first. */
export function dispatchesByKernel(programs: Program[], which: (d: Dispatch) => boolean = () => true): Record<string, number> {
  const counts = new Map<string, number>();
  for (const s of programs.flatMap((p) => p.steps)) {
    if (!('pipeline' in s) || !which(s)) continue;
    const k = kernelName(s.label);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]));
}

export function planStep(o: PlanOptions): PlanResult {
  const targets = [...PROJECTIONS];
  const plans = new Map<boolean, ReturnType<typeof planTrainingStep>>();
  const planWith = (keepAttention: boolean) => {
    if (!plans.has(keepAttention)) {
      plans.set(keepAttention, planTrainingStep(benchConfig(o.size), {
        B: o.batch, T: o.seq, rank: o.rank, targets, recompute: o.recompute, keepAttention, weightDtype: o.dtype, maxBindingBytes: o.maxBindingBytes,
      }));
    }
    return plans.get(keepAttention)!;
  };
  const keepAttention = chooseKeepAttention(o.recompute, (keep) => planWith(keep).memory, o.memoryBytes);
  const { memory, stepPrograms } = planWith(keepAttention);
  const byKernel = dispatchesByKernel(stepPrograms);
  const cost = programCost(stepPrograms);
  return {
    bench: 'plan',
    size: o.size, batch: o.batch, seq: o.seq, rank: o.rank, lora_targets: targets, dtype: o.dtype, recompute: o.recompute, keep_attention: keepAttention,
    max_binding_bytes: o.maxBindingBytes,
    memory_bytes: o.memoryBytes,
    dispatches_per_step: cost.dispatches,
    flops_per_step: cost.flops,
    bytes_per_step: cost.bytes,
    uncounted_dispatches: dispatchesByKernel(stepPrograms, (d) => !d.cost),
    planned_peak_bytes: memory.total,
    planned_peak_gib: round(memory.total / 2 ** 30, 3),
    fits: memory.total <= o.memoryBytes && memory.largestBuffer.bytes <= o.maxBindingBytes,
    memory: { weights: memory.weights, activations: memory.activations, lora: memory.lora, optimizer: memory.optimizer, scratch: memory.scratch },
    dispatches_by_kernel: byKernel,
  };
}
