// The LoRA training benchmark: warm-up steps, then timed optimizer steps of the real trainer (forward, fused
// loss, backward, AdamW) on random weights of a Qwen3 shape, then one profiled step for per-kernel GPU time.
import { createGpu, type Gpu } from '../src/gpu/device.js';
import type { WeightDType } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { plainBatch, shiftLabels } from '../src/model/qwen3.js';
import { releaseModelWeights } from '../src/model/weights.js';
import { initLora, releaseLora, type LoraSettings } from '../src/train/lora.js';
import { PROJECTIONS } from '../src/model/family.js';
import { LoraTrainer, type StepBatch } from '../src/train/trainer.js';
import { trainSteps, type LoopPlan } from '../src/train/loop.js';
import { chooseKeepAttention, estimateTrainingMemory } from '../src/train/memory-plan.js';
import { deviceInfo, runInfo, type DeviceInfo } from './env.js';
import { benchConfig, randomQwen3Weights, randomTokens } from './model.js';
import { profileKernels, programCost, round, type KernelProfile } from './profile.js';

/** The training step a benchmark measures or plans: model size, batch shape, LoRA rank, recomputation, weights. */
export interface StepShape {
  size: string;
  batch: number;
  seq: number;
  rank: number;
  recompute: boolean;
  dtype: WeightDType;
}

export interface TrainBenchOptions extends StepShape {
  warmup: number;
  steps: number;
  seed?: number;
  /** Stage matmul tiles in f16 where the adapter has shader-f16 (f32 accumulation). */
  f16?: boolean;
  /** Use this GPU (tests pass theirs); otherwise one is made with timestamps on and destroyed at the end. */
  gpu?: Gpu;
}

/** The fields of every training benchmark record, ours and the tfjs peer's (bench/results.ts tabulates them). */
export interface TrainRunFields {
  bench: 'train';
  size: string;
  batch: number;
  seq: number;
  rank: number;
  lora_alpha: number;
  warmup_steps: number;
  steps: number;
  step_s: number;
  tokens_per_s: number;
  /** Mean loss of the timed steps: finite, about ln(vocab) on random weights. */
  loss: number;
  peak_bytes: number;
  peak_gib: number;
  date: string;
  commit: string;
  dirty: boolean;
  node: string;
}

export interface TrainBenchResult extends TrainRunFields {
  impl: 'loraforge';
  lora_targets: string[];
  dtype: WeightDType;
  recompute: boolean;
  /** Each layer's attention output and lse kept through the recompute, as the trainer chooses (LORAFORGE_GPU_MEMORY_BYTES or its rule). */
  keep_attention: boolean;
  /** Whether the matmuls ran with f16 tiles (asked for and shader-f16 present). */
  f16: boolean;
  /** Peak bytes of live GPU buffers (weights, adapter, optimizer, activations, scratch). */
  peak_bytes: number;
  weights_bytes: number;
  device: DeviceInfo;
  /** Dispatches of one optimizer step (zeroing, graph, AdamW) and the FLOPs their launchers count. */
  dispatches_per_step: number;
  flops_per_step: number;
  /** GPU time per kernel over one optimizer step (graph and AdamW), profiled after the timed steps. */
  kernels: KernelProfile;
}

export const TRAIN_DEFAULTS = { batch: 1, rank: 8, recompute: true, dtype: 'bf16' as WeightDType, warmup: 2, steps: 8 };

/** Default sequence length: 2048 for the real sizes, 64 for the tiny one (software Vulkan). */
export function defaultSeq(size: string): number {
  return size === 'tiny' ? 64 : 2048;
}

export async function benchmarkTraining(o: TrainBenchOptions): Promise<TrainBenchResult> {
  if (!(o.steps >= 1 && o.warmup >= 0 && o.batch >= 1 && o.seq >= 2)) throw new Error('benchmark needs steps >= 1, warmup >= 0, batch >= 1, seq >= 2');
  const config = benchConfig(o.size);
  const gpu = o.gpu ?? (await createGpu({ timestamps: true, preferF16: o.f16 }));
  const seed = o.seed ?? 0;
  try {
    const before = gpu.liveBytes;
    gpu.peakBytes = gpu.liveBytes;
    const weights = randomQwen3Weights(gpu, config, o.dtype, seed);
    const weightsBytes = gpu.liveBytes - before;
    // PEFT's defaults as the PyTorch peer sets them: alpha = 2r, all seven projections, no dropout.
    const settings: LoraSettings = { rank: o.rank, alpha: 2 * o.rank, rslora: false, dropout: 0, targets: [...PROJECTIONS] };
    const lora = initLora(gpu, config, settings, seed + 1);
    const keepAttention = chooseKeepAttention(o.recompute, (keep) => estimateTrainingMemory(config, {
      B: o.batch, T: o.seq, rank: o.rank, targets: settings.targets, recompute: o.recompute, keepAttention: keep, weightDtype: o.dtype, maxBindingBytes: gpu.maxBindingBytes,
    }));
    const trainer = new LoraTrainer(gpu, config, weights, lora, {
      B: o.batch,
      T: o.seq,
      recompute: o.recompute,
      keepAttention,
      hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 },
    });
    const N = o.batch * o.seq;
    const ids = randomTokens(N, config.vocabSize, seed + 2);
    const batch: StepBatch = plainBatch(ids, o.batch, o.seq, shiftLabels(ids, o.batch, o.seq)) as StepBatch;
    // The training loop of the CLI and the browser on one repeated batch: warm-up steps, then the timed steps,
    // whose only readback (the mean loss, at their last step) waits for the GPU to finish them.
    const plan = (totalSteps: number): LoopPlan => ({
      totalSteps, microPerStep: 1, perEpoch: 1, logEvery: totalSteps, microBatch: () => batch, learningRate: () => 1e-4,
    });
    if (o.warmup > 0) await trainSteps(trainer, plan(o.warmup));
    const start = performance.now();
    const timed = await trainSteps(trainer, plan(o.warmup + o.steps), {}, o.warmup);
    const seconds = (performance.now() - start) / 1000;
    const loss = timed.log.at(-1)!.loss;
    const peak = gpu.peakBytes;

    // One more step for the profile: zero the gradients, forward + loss + backward, AdamW.
    const update = new Program(gpu);
    const scratch = gpu.collect(() => trainer.optimizer.record(update));
    trainer.optimizer.setStep(o.warmup + o.steps + 1, 1e-4);
    const stepPrograms = [trainer.graph.zeroGrads, trainer.graph.program, update];
    const perStep = programCost(stepPrograms);
    const kernels = await profileKernels(gpu, stepPrograms);
    for (const b of scratch) gpu.release(b);

    trainer.destroy();
    releaseLora(gpu, lora);
    releaseModelWeights(gpu, weights);
    const stepS = seconds / o.steps;
    return {
      bench: 'train',
      impl: 'loraforge',
      size: o.size,
      batch: o.batch,
      seq: o.seq,
      rank: o.rank,
      lora_alpha: settings.alpha,
      lora_targets: [...settings.targets],
      dtype: o.dtype,
      recompute: o.recompute,
      keep_attention: keepAttention,
      f16: gpu.useF16,
      warmup_steps: o.warmup,
      steps: o.steps,
      step_s: round(stepS, 5),
      tokens_per_s: round(N / stepS, 1),
      loss: round(loss, 5),
      peak_bytes: peak,
      peak_gib: round(peak / 2 ** 30, 3),
      weights_bytes: weightsBytes,
      dispatches_per_step: perStep.dispatches,
      flops_per_step: perStep.flops,
      device: deviceInfo(gpu),
      ...runInfo(),
      kernels,
    };
  } finally {
    if (!o.gpu) await gpu.destroy();
  }
}
