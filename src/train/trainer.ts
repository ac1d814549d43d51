// The LoRA training step on the GPU: one recorded graph (forward, fused loss, backward) replayed per
// micro-batch, gradient accumulation in the LoRA gradient buffers, one recorded AdamW update per optimizer
// step. The loss is summed on the GPU and read back only when it is logged.
import type { Gpu } from '../gpu/device.js';
import { Program } from '../gpu/program.js';
import type { ModelConfig } from '../model/config.js';
import type { ModelWeights } from '../model/weights.js';
import { Qwen3Graph, type GraphBatch } from '../model/qwen3.js';
import { AdamW, type AdamWHyper, type AdamWState } from '../kernels/adamw.js';
import { recordAddInPlace, recordFill } from '../kernels/elementwise.js';
import {
  kindUsesReference, PREFERENCE_STATS, preferenceMetricsOf, recordPreferenceLoss, type PreferenceKind, type PreferenceLossSettings,
} from '../kernels/preference-loss.js';
import { SequenceLogprobHead } from '../model/heads.js';
import type { LoraWeights } from './lora.js';

export interface StepBatch extends GraphBatch {
  targets: Int32Array;
  /** KTO: u32 [B/2], 1 where example i (row i) is desirable. */
  desirable?: Uint32Array;
}

/**
 * The preference stages' objective. The batch then holds B = 2P rows: DPO rows [0, P) the chosen and [P, 2P) the
 * rejected answers; KTO rows [0, P) the examples and [P, 2P) their KL rows (kernels/preference-loss.ts).
 */
export type PreferenceObjective = Omit<PreferenceLossSettings, 'scale'> & { kind: PreferenceKind };

export interface TrainerOptions {
  B: number;
  T: number;
  recompute: boolean;
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
  /** Preference stages: the policy head, the reference head (adapter off; absent for orpo / simpo), labels. */
  private readonly pref?: { head: SequenceLogprobHead; reference?: SequenceLogprobHead; seqOf: Uint32Array; desirable: GPUBuffer };
  private stepsSinceRead = 0;
  private metrics?: Record<string, number>;
  private evalGraph?: Qwen3Graph;
  private readonly owned: GPUBuffer[];

  constructor(readonly gpu: Gpu, readonly config: ModelConfig, readonly weights: ModelWeights, readonly lora: LoraWeights, readonly opts: TrainerOptions) {
    const N = opts.B * opts.T;
    const pref = opts.preference;
    if (pref) {
      if (opts.B % 2 !== 0) throw new Error(`a preference batch has two rows per pair, got B = ${opts.B}`);
      const head = (label: string) => gpu.inCategory('activations', () => new SequenceLogprobHead(gpu, weights.lmHead, N, opts.B, label));
      // Row b is sequence b.
      const seqOf = Uint32Array.from({ length: N }, (_, n) => Math.floor(n / opts.T));
      this.pref = { head: head('sequence-logprob'), reference: kindUsesReference(pref.kind) ? head('reference-logprob') : undefined, seqOf, desirable: gpu.inCategory('activations', () => gpu.storage((opts.B / 2) * 4, 'KTO desirable')) };
    }
    this.graph = new Qwen3Graph(gpu, config, weights, { B: opts.B, T: opts.T, mode: 'train', lora, recompute: opts.recompute, head: this.pref?.head, referenceHead: this.pref?.reference });
    this.update = new Program(gpu);
    this.accumulate = new Program(gpu);
    this.resetLoss = new Program(gpu);
    this.optimizer = gpu.inCategory('optimizer', () => adapterAdamW(gpu, lora, opts.hyper));
    const statCount = pref ? PREFERENCE_STATS : 1;
    const lossSum = gpu.storage(statCount * 4, pref ? 'preference stats' : 'lossSum');
    this.lossSum = lossSum;
    this.microProgram = pref ? new Program(gpu) : this.graph.program;
    // The programs' uniforms and scratch are freed with the trainer.
    this.owned = [
      ...gpu.inCategory('optimizer', () => gpu.collect(() => this.optimizer.record(this.update))),
      ...gpu.collect(() => {
        if (this.pref) {
          // The whole micro-batch in one program: reference sums, policy sums, dSeq on the GPU, backward.
          const { head, reference, desirable } = this.pref;
          const loss = new Program(gpu);
          recordPreferenceLoss(loss, {
            sums: head.sums, counts: head.counts, refSums: reference?.sums ?? head.sums, desirable, dSeq: head.dSeq, stats: lossSum,
            pairs: opts.B / 2, settings: { ...pref!, scale: 1 / (opts.microPerStep ?? 1) },
          });
          this.microProgram.steps.push(...this.graph.referenceForward.steps, ...this.graph.forward.steps, ...loss.steps, ...this.graph.backward.steps);
        } else {
          recordAddInPlace(this.accumulate, { dst: lossSum, src: this.graph.loss, count: 1 });
        }
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
      this.graph.setBatch(b, inv);
      if (this.pref) this.setPreferenceBatch(b);
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

  private setPreferenceBatch(b: StepBatch): void {
    const { head, reference, seqOf, desirable } = this.pref!;
    head.setSequences(b.targets, seqOf);
    reference?.setSequences(b.targets, seqOf);
    if (this.opts.preference!.kind === 'kto') {
      if (b.desirable?.length !== this.opts.B / 2) throw new Error(`a KTO batch needs ${this.opts.B / 2} desirable flags`);
      this.gpu.write(desirable, b.desirable);
    }
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
    if (this.pref) throw new Error('evaluation of the preference stages is not implemented');
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

  optimizerState(): Promise<AdamWState> {
    return this.optimizer.state();
  }

  loadOptimizerState(s: AdamWState): void {
    this.optimizer.loadState(s);
  }

  destroy(): void {
    this.graph.destroy();
    this.evalGraph?.destroy();
    this.optimizer.destroy();
    for (const b of [this.lossSum, ...this.owned]) this.gpu.release(b);
    if (this.pref) this.gpu.release(this.pref.desirable);
  }
}
