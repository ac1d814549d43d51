// GPU memory of a LoRA training job, known before anything is allocated: a dry run builds the job's weights,
// adapter, graph and optimizer, exactly as training does, on a Gpu that allocates nothing and counts every buffer
// (gpu/dry-run.ts). So the plan is what the code allocates, never a second formula beside it; it can refuse a job
// that cannot fit instead of failing half-way through an allocation. WebGPU does not expose total memory: a budget
// comes from the caller or LORAFORGE_GPU_MEMORY_BYTES.
import type { Gpu } from '../gpu/device.js';
import { CountingGpu } from '../gpu/dry-run.js';
import type { Program } from '../gpu/program.js';
import type { MatrixDType } from '../gpu/matrix.js';
import type { ModelConfig } from '../model/config.js';
import { allocateModelWeights } from '../model/weights.js';
import { UserError } from '../errors.js';
import type { Projection } from '../model/family.js';
import { initLora } from './lora-weights.js';
import { LoraTrainer } from './trainer.js';
import type { PreferenceKind } from '../kernels/preference-loss.js';

export interface MemoryPlanOptions {
  /** Rows per micro-batch and tokens per row. */
  B: number;
  T: number;
  rank: number;
  targets: Projection[];
  /** Gradient checkpointing: one layer's activations instead of all of them. */
  recompute: boolean;
  /** With `recompute`: each layer's attention output and lse kept (chooseKeepAttention). */
  keepAttention?: boolean;
  /** How the base matrices are held (with `matrixDtype`: the embedding's, for the advice given). */
  weightDtype: MatrixDType;
  /** Per matrix by HF tensor name, where they differ (a GGUF base's type mix); default `weightDtype`. */
  matrixDtype?: (name: string) => MatrixDType;
  /** Bytes one storage binding may span (weights split by it, the cross-entropy chunk sized from it); default 128 MiB. */
  maxBindingBytes?: number;
  /** LoRA dropout probability: above 0, one scratch [N, largest adapted input] holds the dropped input. */
  dropout?: number;
  /** A preference stage's loss (B then counts both rows of each example): sequence heads instead of cross-entropy. */
  preference?: PreferenceKind;
}

export interface MemoryEstimate {
  /** Base weights. */
  weights: number;
  /** The graph's inputs, activations and gradients, and the head's buffers. */
  activations: number;
  /** LoRA factors and their gradients. */
  lora: number;
  /** AdamW's moments, statistics and its program's scratch. */
  optimizer: number;
  /** Kernel scratch and uniforms made while recording the graph, and the trainer's loss sum. */
  scratch: number;
  total: number;
  /** The largest single buffer (weights are split to fit a binding; activations are not). */
  largestBuffer: { name: string; bytes: number };
}

const DEFAULT_BINDING = 128 * 1024 * 1024;

/** Build the training job on a counting Gpu, as training does. */
function dryRunTraining(c: ModelConfig, o: MemoryPlanOptions): { gpu: CountingGpu; trainer: LoraTrainer } {
  const gpu = new CountingGpu({ maxBindingBytes: o.maxBindingBytes ?? DEFAULT_BINDING });
  const weights = gpu.inCategory('weights', () => allocateModelWeights(gpu, c, (name) => o.matrixDtype?.(name) ?? o.weightDtype));
  const lora = gpu.inCategory('lora', () => initLora(gpu, c, { rank: o.rank, alpha: o.rank, rslora: false, dropout: o.dropout ?? 0, targets: o.targets }, 0));
  const trainer = new LoraTrainer(gpu, c, weights, lora, {
    B: o.B, T: o.T, recompute: o.recompute, keepAttention: o.keepAttention, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 },
    preference: o.preference && { kind: o.preference, beta: 0.1, ftx: 0, gamma: 0, chosenWeight: 1, rejectedWeight: 1 },
  });
  return { gpu, trainer };
}

function memoryOf(gpu: CountingGpu): MemoryEstimate {
  const bytes = (category: string) => gpu.liveByCategory.get(category) ?? 0;
  const e = {
    weights: bytes('weights'), activations: bytes('activations'), lora: bytes('lora'), optimizer: bytes('optimizer'),
    scratch: bytes('scratch') + bytes('other'), total: gpu.peakBytes, largestBuffer: { name: gpu.largest.label, bytes: gpu.largest.bytes },
  };
  if (e.weights + e.activations + e.lora + e.optimizer + e.scratch !== e.total) throw new Error('memory plan: a buffer was freed during the dry run');
  return e;
}

/** Build the training job on a counting Gpu and report what it allocated, by category. */
export function estimateTrainingMemory(c: ModelConfig, o: MemoryPlanOptions): MemoryEstimate {
  return memoryOf(dryRunTraining(c, o).gpu);
}

/**
 * The memory plan and the recorded programs of one optimizer step (gradient accumulation 1), from the same dry
 * run: what a step dispatches can be counted without a GPU.
 */
export function planTrainingStep(c: ModelConfig, o: MemoryPlanOptions): { memory: MemoryEstimate; stepPrograms: Program[] } {
  const { gpu, trainer } = dryRunTraining(c, o);
  return { memory: memoryOf(gpu), stepPrograms: trainer.stepPrograms };
}

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const fmt = (bytes: number) => (bytes >= GIB ? `${(bytes / GIB).toFixed(2)} GiB` : `${(bytes / MIB).toFixed(1)} MiB`);

/** The budget from LORAFORGE_GPU_MEMORY_BYTES, if set. */
export function memoryBudgetFromEnv(): number | undefined {
  const raw = process.env.LORAFORGE_GPU_MEMORY_BYTES;
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new UserError(`LORAFORGE_GPU_MEMORY_BYTES must be a positive number of bytes, got '${raw}'`);
  return n;
}

/**
 * Gradient checkpointing (recomputation) as the config says: LLaMA-Factory's disable_gradient_checkpointing when
 * given. Unset, the activations are kept (no recomputation: a third less work per step) when the plan without
 * recomputation fits the memory budget and its buffers one binding each; otherwise, and whenever no budget is
 * known (WebGPU does not report an adapter's memory; the budget is LORAFORGE_GPU_MEMORY_BYTES), recomputed, as
 * LLaMA-Factory does by default.
 */
export function chooseRecompute(
  disable: boolean | undefined,
  planFor: (recompute: boolean) => MemoryEstimate,
  gpu: Pick<Gpu, 'maxBindingBytes'> & { device: { limits: { maxBufferSize: number } } },
  budget = memoryBudgetFromEnv(),
): boolean {
  if (disable !== undefined) return !disable;
  if (budget === undefined) return true;
  const kept = planFor(false);
  return !(kept.total <= budget && kept.largestBuffer.bytes <= Math.min(gpu.device.limits.maxBufferSize, gpu.maxBindingBytes));
}

/** With no memory budget known, attention is kept when it adds at most this fraction to the planned total. */
export const KEEP_ATTENTION_UNBUDGETED_SHARE = 0.25;

/**
 * Whether a recomputing job keeps each layer's attention output and log-sum-exp (N·(heads·headDim + heads) floats
 * per layer), so the recomputed forward skips attention (at 0.6B, 1 x 2048: 0.42 GiB for 0.47 TFLOP a step). With a
 * budget (LORAFORGE_GPU_MEMORY_BYTES, or the caller's), kept when the plan with it fits the budget; with none, when
 * it adds at most a quarter to the planned total (the adapter's memory is unknown: a bounded cost, not a gamble on
 * it). Without recomputation everything is kept anyway.
 */
export function chooseKeepAttention(recompute: boolean, planFor: (keepAttention: boolean) => MemoryEstimate, budget = memoryBudgetFromEnv()): boolean {
  if (!recompute) return false;
  const kept = planFor(true);
  if (budget !== undefined) return kept.total <= budget;
  return kept.total <= (1 + KEEP_ATTENTION_UNBUDGETED_SHARE) * planFor(false).total;
}

/**
 * Refuse a job the adapter cannot hold: a buffer over maxBufferSize or over one binding, or a total over `budget`
 * (default: LORAFORGE_GPU_MEMORY_BYTES; unchecked when neither is given). The message gives the numbers and what to
 * change.
 */
export function checkMemory(e: MemoryEstimate, gpu: Pick<Gpu, 'maxBindingBytes'> & { device: { limits: { maxBufferSize: number } } }, o: { budget?: number; recompute: boolean; weightDtype: MatrixDType }): void {
  const hints = ['lower per_device_train_batch_size or cutoff_len'];
  if (!o.recompute) hints.push('turn gradient checkpointing on (disable_gradient_checkpointing: false)');
  if (o.weightDtype === 'f32') hints.push('keep the weights in bf16 (bf16: true)');
  const advice = hints.join(', or ');
  const limit = Math.min(gpu.device.limits.maxBufferSize, gpu.maxBindingBytes);
  if (e.largestBuffer.bytes > limit) {
    throw new UserError(`the ${e.largestBuffer.name} buffer needs ${fmt(e.largestBuffer.bytes)}, more than this GPU binds at once (${fmt(limit)}): ${advice}`);
  }
  const budget = o.budget ?? memoryBudgetFromEnv();
  if (budget !== undefined && e.total > budget) {
    const parts = `weights ${fmt(e.weights)}, activations ${fmt(e.activations)}, LoRA ${fmt(e.lora)}, optimizer ${fmt(e.optimizer)}, scratch ${fmt(e.scratch)}`;
    throw new UserError(`training needs about ${fmt(e.total)} of GPU memory (${parts}) but the budget is ${fmt(budget)} (LORAFORGE_GPU_MEMORY_BYTES): ${advice}`);
  }
}
