// The LoRA training step on the GPU: one recorded graph (forward, fused loss, backward) replayed per
// micro-batch, gradient accumulation in the LoRA gradient buffers, one recorded AdamW update per optimizer
// step. The loss is summed on the GPU and read back only when it is logged. Stages dpo / kto replay a
// PreferenceStep instead (reference forward with the adapter off, forward, preference loss, backward).
import type { Gpu } from '../gpu/device.js';
import { Program } from '../gpu/program.js';
import type { ModelConfig } from '../model/config.js';
import type { ModelWeights } from '../model/weights.js';
import { Qwen3Graph, type GraphBatch } from '../model/qwen3.js';
import { AdamW, type AdamWHyper, type AdamWState } from '../kernels/adamw.js';
import { recordAddInPlace, recordFill } from '../kernels/elementwise.js';
import { PREFERENCE_STATS, preferenceMetricsOf } from '../kernels/preference-loss.js';
import type { LoraWeights } from './lora.js';
import { PreferenceStep, type PreferenceObjective } from './preference-step.js';

export type { PreferenceObjective } from './preference-step.js';

export interface StepBatch extends GraphBatch {
  targets: Int32Array;
  /** KTO: u32 [B/2], 1 where example i (row i) is desirable. */
  desirable?: Uint32Array;
}

export interface TrainerOptions {
  B: number;
  T: number;
  recompute: boolean;
  /** With `recompute`: keep each layer's attention output and lse (the memory plan's chooseKeepAttention). */
  keepAttention?: boolean;
  hyper: AdamWHyper;
  /** Seed of the LoRA dropout masks (used when the adapter's dropout is > 0). */
  seed?: number;
  /** A preference stage (dpo / kto) instead of SFT's token cross-entropy. */
  preference?: PreferenceObjective;
  /** Micro-batches per optimizer step (preference stages scale each micro-batch's loss by its inverse); default 1. */
  microPerStep?: number;
}

export function countTargets(targets: Int32Array): number {
  let n = 0;
  for (const t of targets) if (t !== -100) n++;
  return n;
}

/**
 * AdamW over the adapter's flat factor and gradient buffers (a dispatch per buffer, not per tensor); its saved
 * state stays per tensor, A then B per layer and target, as checkpoints have always held it.
 */
export function adapterAdamW(gpu: Gpu, lora: LoraWeights, hp: AdamWHyper): AdamW {
  const index = new Map(lora.params.map((f, i) => [f.buffer, i]));
  const tensors = lora.layers.flatMap((layer) => Object.values(layer).flatMap((p) => [p.A, p.B].map((r) => ({
    buffer: index.get(r.buffer)!, offset: r.offset / 4, count: r.size / 4,
  }))));
  const buffers = lora.params.map((f, i) => ({ param: f.buffer, grad: lora.grads[i]!.buffer, count: f.count }));
  return new AdamW(gpu, buffers, hp, tensors);
}

export class LoraTrainer {
  readonly graph: Qwen3Graph;
  readonly optimizer: AdamW;
  private readonly update: Program;
  private readonly accumulate: Program;
  private readonly resetLoss: Program;
  /** One micro-batch: the graph's program (SFT), or reference forward, forward, preference loss, backward. */
  private readonly microProgram: Program;
  /**
   * f32[1]: sum of optimizer-step losses since the last read; preference stages: f32[PREFERENCE_STATS], the
   * loss and the reward sums their kernel accumulates.
   */
  private readonly lossSum: GPUBuffer;
  /**
   * Preference stages: the step (two sequence heads, reference forward, loss on the GPU). The batch then holds two
   * rows per example: dpo the chosen rows then the rejected ones, kto the examples then their KL rows.
   */
  private readonly pref?: PreferenceStep;
  private stepsSinceRead = 0;
  private metrics?: Record<string, number>;
  private evalGraph?: Qwen3Graph;
  /** Preference stages' evaluation: its step (forward only) and stats. */
  private evalPref?: { step: PreferenceStep; stats: GPUBuffer; reset: Program; owned: GPUBuffer[] };
  private readonly owned: GPUBuffer[];

  constructor(readonly gpu: Gpu, readonly config: ModelConfig, readonly weights: ModelWeights, readonly lora: LoraWeights, readonly opts: TrainerOptions) {
    const pref = opts.preference;
    const statCount = pref ? PREFERENCE_STATS : 1;
    const lossSum = gpu.storage(statCount * 4, pref ? 'preference stats' : 'lossSum');
    this.lossSum = lossSum;
    if (pref) {
      this.pref = new PreferenceStep(gpu, config, weights, lora, pref, { B: opts.B, T: opts.T, mode: 'train', recompute: opts.recompute, keepAttention: opts.keepAttention, scale: 1 / (opts.microPerStep ?? 1), stats: lossSum });
      this.graph = this.pref.graph;
    } else {
      this.graph = new Qwen3Graph(gpu, config, weights, { B: opts.B, T: opts.T, mode: 'train', lora, recompute: opts.recompute, keepAttention: opts.keepAttention });
    }
    this.update = new Program(gpu);
    this.accumulate = new Program(gpu);
    this.resetLoss = new Program(gpu);
    this.optimizer = gpu.inCategory('optimizer', () => adapterAdamW(gpu, lora, opts.hyper));
    this.microProgram = this.pref?.program ?? this.graph.program;
    // The programs' uniforms and scratch are freed with the trainer.
    this.owned = [
      ...gpu.inCategory('optimizer', () => gpu.collect(() => this.optimizer.record(this.update))),
      ...gpu.collect(() => {
        // Preference stages: the loss kernel adds into the stats itself.
        if (!this.pref) recordAddInPlace(this.accumulate, { dst: lossSum, src: this.graph.loss, count: 1 });
        recordFill(this.resetLoss, { dst: lossSum, count: statCount, value: 0 });
      }),
    ];
    this.resetLoss.run();
  }

  /**
   * One optimizer step over `micro` batches: each micro-batch's loss is scaled by 1/(tokens counted in the whole
   * step), so the accumulated gradient is that of the mean over all of them (as transformers does with
   * num_items_in_batch). `t` is the 1-based optimizer step; micro-batch k of it is the run's micro-batch
   * (t−1)·micro.length + k, which picks its dropout masks, so a resumed run draws the same masks.
   */
  step(micro: StepBatch[], t: number, lr: number): void {
    this.accumulateGradients(micro, t);
    this.optimizer.setStep(t, lr);
    this.update.run();
    this.stepsSinceRead++;
  }

  /**
   * The step without the update: zero the LoRA gradients and run every micro-batch into them (and into the loss
   * sum). `step` is this plus AdamW; parity checks the gradients it leaves.
   */
  accumulateGradients(micro: StepBatch[], t: number): void {
    const total = micro.reduce((n, b) => n + countTargets(b.targets), 0);
    const inv = total > 0 ? 1 / total : 0;
    this.graph.zeroGrads.run();
    for (const [k, b] of micro.entries()) {
      if (this.pref) this.pref.setBatch(b);
      else this.graph.setBatch(b, inv);
      this.graph.setDropoutStep(this.opts.seed ?? 0, (t - 1) * micro.length + k);
      this.microProgram.run();
      if (!this.pref) this.accumulate.run();
    }
  }

  /** Preference stages: the last micro-batch's per-sequence sums and counts, policy and reference (tests, parity). */
  async readSequenceLogps(): Promise<{ policy: { sums: Float32Array; counts: Float32Array }; reference?: { sums: Float32Array; counts: Float32Array } }> {
    if (!this.pref) throw new Error('this trainer has no sequence heads (stage sft)');
    return { policy: await this.pref.head.read(), reference: await this.pref.reference?.read() };
  }

  /** The programs one optimizer step of one micro-batch runs, in order (for counting what a step dispatches). */
  get stepPrograms(): Program[] {
    return [this.graph.zeroGrads, this.microProgram, this.accumulate, this.update];
  }

  /**
   * Mean loss of the optimizer steps since the last call (the only readback of the loop); preference stages also
   * read their rewards, which `takeMetrics` then returns.
   */
  async readMeanLoss(): Promise<number> {
    const stats = await this.gpu.readF32(this.lossSum, this.pref ? PREFERENCE_STATS : 1);
    const mean = stats[0]! / Math.max(1, this.stepsSinceRead);
    if (this.opts.preference) this.metrics = preferenceMetricsOf(this.opts.preference.kind, stats);
    this.resetLoss.run();
    this.stepsSinceRead = 0;
    return mean;
  }

  /** Preference stages: LLaMA-Factory's rewards/* and logps/* over the steps of the last `readMeanLoss`. */
  takeMetrics(): Record<string, number> | undefined {
    const m = this.metrics;
    this.metrics = undefined;
    return m;
  }

  /** Mean token loss over `batches` (of any one batch size) without touching the adapter. */
  async evaluate(batches: StepBatch[], B = this.opts.B): Promise<number> {
    if (this.pref) return this.evaluatePreference(batches, B);
    let graph = this.evalGraph;
    if (graph?.opts.B !== B) {
      graph?.destroy();
      graph = this.evalGraph = new Qwen3Graph(this.gpu, this.config, this.weights, { B, T: this.opts.T, mode: 'loss', lora: this.lora });
    }
    const total = batches.reduce((n, b) => n + countTargets(b.targets), 0);
    let sum = 0;
    for (const b of batches) {
      graph.setBatch(b, 1 / Math.max(1, total));
      graph.program.run();
      sum += await graph.readLoss();
    }
    return sum;
  }

  /** Preference stages: the mean over `batches` (B rows each) of their preference loss, adapter untouched. */
  private async evaluatePreference(batches: StepBatch[], B: number): Promise<number> {
    let e = this.evalPref;
    if (e?.step.graph.opts.B !== B) {
      this.destroyEvalPreference();
      const gpu = this.gpu;
      const stats = gpu.storage(PREFERENCE_STATS * 4, 'eval preference stats');
      const step = new PreferenceStep(gpu, this.config, this.weights, this.lora, this.opts.preference!, { B, T: this.opts.T, mode: 'loss', scale: 1, stats });
      const reset = new Program(gpu);
      const owned = gpu.collect(() => recordFill(reset, { dst: stats, count: PREFERENCE_STATS, value: 0 }));
      e = this.evalPref = { step, stats, reset, owned };
    }
    e.reset.run();
    for (const b of batches) {
      e.step.setBatch(b);
      e.step.program.run();
    }
    const stats = await this.gpu.readF32(e.stats, PREFERENCE_STATS);
    return stats[0]! / Math.max(1, batches.length);
  }

  private destroyEvalPreference(): void {
    const e = this.evalPref;
    if (!e) return;
    e.step.destroy();
    for (const b of [e.stats, ...e.owned]) this.gpu.release(b);
    this.evalPref = undefined;
  }

  optimizerState(): Promise<AdamWState> {
    return this.optimizer.state();
  }

  loadOptimizerState(s: AdamWState): void {
    this.optimizer.loadState(s);
  }

  destroy(): void {
    if (this.pref) this.pref.destroy();
    else this.graph.destroy();
    this.evalGraph?.destroy();
    this.destroyEvalPreference();
    this.optimizer.destroy();
    for (const b of [this.lossSum, ...this.owned]) this.gpu.release(b);
  }
}
