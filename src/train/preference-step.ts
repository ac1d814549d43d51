// The preference stages' micro-batch as one recorded program on a graph with two sequence heads: the reference
// forward (the same trunk and weights with the adapter off, into the reference head), the policy forward, the
// preference loss (kernels/preference-loss.ts: loss, dSeq and rewards accumulated in `stats`) and, in training,
// the backward. A batch of P examples is B = 2P rows; row b is sequence b (see kernels/preference-loss.ts).
import type { Gpu } from '../gpu/device.js';
import { Program } from '../gpu/program.js';
import type { ModelConfig } from '../model/config.js';
import type { ModelWeights } from '../model/weights.js';
import { Qwen3Graph, type GraphBatch } from '../model/qwen3.js';
import { SequenceLogprobHead } from '../model/heads.js';
import { kindUsesReference, recordPreferenceLoss, type PreferenceKind, type PreferenceLossSettings } from '../kernels/preference-loss.js';
import type { LoraWeights } from './lora.js';

/** A preference stage's loss and its settings (the scale per micro-batch is the step's). */
export type PreferenceObjective = Omit<PreferenceLossSettings, 'scale'> & { kind: PreferenceKind };

export interface PreferenceStepOptions {
  /** Rows: two per example. */
  B: number;
  T: number;
  /** 'train' records the backward too; 'loss' only the forwards and the loss (evaluation). */
  mode: 'train' | 'loss';
  recompute?: boolean;
  keepAttention?: boolean;
  /** Multiplies each micro-batch's loss and dSeq (1 / micro-batches per optimizer step). */
  scale: number;
  /** f32 [PREFERENCE_STATS] the loss kernel adds into. */
  stats: GPUBuffer;
}

export class PreferenceStep {
  readonly graph: Qwen3Graph;
  /** The policy's sums (adapter on) and the reference's (adapter off; none for orpo / simpo). */
  readonly head: SequenceLogprobHead;
  readonly reference?: SequenceLogprobHead;
  /** One micro-batch: reference forward, forward, loss (, backward). */
  readonly program: Program;
  /** u32 [B/2]: KTO's labels. */
  private readonly desirable: GPUBuffer;
  /** u32 [B·T]: row b is sequence b. */
  private readonly seqOf: Uint32Array;
  private readonly owned: GPUBuffer[];

  constructor(readonly gpu: Gpu, config: ModelConfig, weights: ModelWeights, lora: LoraWeights, readonly objective: PreferenceObjective, o: PreferenceStepOptions) {
    if (o.B % 2 !== 0 || o.B < 2) throw new Error(`a preference batch has two rows per example, got B = ${o.B}`);
    const N = o.B * o.T;
    const head = (label: string, shareScratch?: SequenceLogprobHead) => gpu.inCategory('activations', () => new SequenceLogprobHead(gpu, weights.lmHead, N, o.B, label, shareScratch));
    // The reference forward runs whole before the policy's, so the policy folds its logits in the same scratch.
    this.reference = kindUsesReference(objective.kind) ? head('reference-logprob') : undefined;
    this.head = head('sequence-logprob', this.reference);
    this.seqOf = Uint32Array.from({ length: N }, (_, n) => Math.floor(n / o.T));
    this.desirable = gpu.inCategory('activations', () => gpu.storage((o.B / 2) * 4, 'KTO desirable'));
    this.graph = new Qwen3Graph(gpu, config, weights, { B: o.B, T: o.T, mode: o.mode, lora, recompute: o.recompute, keepAttention: o.keepAttention, head: this.head, referenceHead: this.reference });
    this.program = new Program(gpu);
    this.owned = gpu.collect(() => {
      const loss = new Program(gpu);
      recordPreferenceLoss(loss, {
        sums: this.head.sums, counts: this.head.counts, refSums: this.reference?.sums ?? this.head.sums, desirable: this.desirable,
        dSeq: this.head.dSeq, stats: o.stats, pairs: o.B / 2, settings: { ...objective, scale: o.scale },
      });
      this.program.steps.push(...this.graph.referenceForward.steps, ...this.graph.forward.steps, ...loss.steps, ...this.graph.backward.steps);
    });
  }

  /** Write a batch: the graph's inputs, both heads' targets, KTO's labels. */
  setBatch(b: GraphBatch & { targets: Int32Array; desirable?: Uint32Array }): void {
    this.graph.setBatch(b);
    this.head.setSequences(b.targets, this.seqOf);
    this.reference?.setSequences(b.targets, this.seqOf);
    if (this.objective.kind === 'kto') {
      const P = this.graph.opts.B / 2;
      if (b.desirable?.length !== P) throw new Error(`a KTO batch needs ${P} desirable flags`);
      this.gpu.write(this.desirable, b.desirable);
    }
  }

  destroy(): void {
    this.graph.destroy();
    for (const b of [this.desirable, ...this.owned]) this.gpu.release(b);
  }
}
