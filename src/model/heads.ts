// Heads of the graph: what is computed from the trunk's final hidden states [N, H] and, for training, the
// gradient they send back into the trunk. The graph records the trunk's forward, then `recordForward`; in
// training it records `recordBackward` (writing dHidden) before the trunk's backward, in a second program, so a
// stage can compute a head's incoming gradient on the GPU between the two.
import type { Gpu } from '../gpu/device.js';
import type { GpuMatrix } from '../gpu/matrix.js';
import type { Program } from '../gpu/program.js';
import { recordCrossEntropyBackward, recordCrossEntropyForward, recordLogits, type CrossEntropyForward } from '../kernels/cross-entropy.js';
import { recordSequenceLogprobBackward, recordSequenceLogprobForward, type SequenceLogprobForward } from '../kernels/sequence-logprob.js';

export interface GraphHead {
  /**
   * Record the head on hidden [N, H]; its scratch belongs to the graph that records it. `backward`: the graph
   * trains and will record `recordBackward` (a head may then gather its gradient's pieces in the forward).
   */
  recordForward(prog: Program, hidden: GPUBuffer, backward: boolean): void;
  /** Record dHidden (=) [N, H], the gradient into the trunk. Heads without one throw. */
  recordBackward(prog: Program, dHidden: GPUBuffer): void;
  /** Free the head's own buffers (the graph calls it when it is destroyed). */
  destroy(): void;
}

/** Buffers a head makes in its constructor, released by `destroy`. */
abstract class OwnedBuffers {
  private readonly owned: GPUBuffer[] = [];
  constructor(readonly gpu: Gpu) {}
  protected storage(bytes: number, label: string): GPUBuffer {
    const b = this.gpu.storage(bytes, label);
    this.owned.push(b);
    return b;
  }
  destroy(): void {
    for (const b of this.owned.splice(0)) this.gpu.release(b);
  }
}

/** Full logits [N, V] (small vocabularies: parity checks, generation). No gradient. */
export class LogitsHead extends OwnedBuffers implements GraphHead {
  /** f32 [N, V]. */
  readonly logits: GPUBuffer;
  constructor(gpu: Gpu, readonly lmHead: GpuMatrix, readonly N: number) {
    super(gpu);
    this.logits = this.storage(N * lmHead.rows * 4, 'logits');
  }
  recordForward(prog: Program, hidden: GPUBuffer): void {
    recordLogits(prog, { hidden, lmHead: this.lmHead, logits: this.logits, N: this.N });
  }
  recordBackward(): void {
    throw new Error('the logits head has no gradient');
  }
}

/**
 * Supervised fine-tuning's loss: mean token cross-entropy over counted targets, chunked over the vocabulary.
 * `invCount` = 1 / counted tokens of the whole optimizer step, so micro-batch losses and gradients add up to
 * the step's mean without a readback. In training its forward is the one-pass form (cross-entropy.ts: the
 * gradient gathered with the loss, no lm_head recompute) and its backward a single elementwise finish.
 */
export class TokenCrossEntropyHead extends OwnedBuffers implements GraphHead {
  /** i32 [N]: next-token targets, −100 where not counted. */
  readonly targets: GPUBuffer;
  /** f32[1]: 1 / counted tokens of the optimizer step. */
  readonly invCount: GPUBuffer;
  /** f32[1]: Σ counted token losses · invCount. */
  readonly loss: GPUBuffer;
  private forward?: CrossEntropyForward;

  constructor(gpu: Gpu, readonly lmHead: GpuMatrix, readonly N: number) {
    super(gpu);
    this.targets = this.storage(N * 4, 'targets');
    this.invCount = this.storage(4, 'invCount');
    this.loss = this.storage(4, 'loss');
  }

  recordForward(prog: Program, hidden: GPUBuffer, backward: boolean): void {
    this.forward = recordCrossEntropyForward(prog, { hidden, lmHead: this.lmHead, targets: this.targets, N: this.N, invCount: this.invCount, loss: this.loss }, 'cross-entropy', backward);
  }

  recordBackward(prog: Program, dHidden: GPUBuffer): void {
    if (!this.forward) throw new Error('record the forward of the head first');
    recordCrossEntropyBackward(prog, this.forward, dHidden);
  }

  /** `invCount` defaults to 1 / this batch's counted targets. */
  setTargets(targets: Int32Array, invCount?: number): void {
    if (targets.length !== this.N) throw new Error(`${targets.length} targets, the head expects ${this.N}`);
    this.gpu.write(this.targets, targets);
    let counted = 0;
    for (const t of targets) if (t !== -100) counted++;
    this.gpu.write(this.invCount, new Float32Array([invCount ?? 1 / Math.max(1, counted)]));
  }

  async readLoss(): Promise<number> {
    return (await this.gpu.readF32(this.loss, 1))[0]!;
  }
}

/**
 * Preference stages' quantity: per sequence, the sum of its counted tokens' log-probs (and their count, for
 * means), chunked over the vocabulary. The stage writes dSeq (dLoss/dsums, f32 [S]) between the graph's forward
 * and backward programs, on the GPU or with `setSequenceGrad`.
 */
export class SequenceLogprobHead extends OwnedBuffers implements GraphHead {
  /** i32 [N]: next-token targets, −100 where not counted. */
  readonly targets: GPUBuffer;
  /** u32 [N]: the sequence each token belongs to (>= sequences: not counted). */
  readonly seqOf: GPUBuffer;
  /** f32 [S]: Σ counted log-probs per sequence. */
  readonly sums: GPUBuffer;
  /** f32 [S]: counted tokens per sequence. */
  readonly counts: GPUBuffer;
  /** f32 [S]: the gradient coming back, dLoss/dsums. */
  readonly dSeq: GPUBuffer;
  private forward?: SequenceLogprobForward;

  /**
   * `label` names its kernels (a graph with a reference head has two). `shareScratch`: a head whose forward is
   * recorded before this one's and whose programs never run between this head's forward and backward (the
   * reference head of the same graph); this head then folds its logits chunks in that head's scratch.
   */
  constructor(gpu: Gpu, readonly lmHead: GpuMatrix, readonly N: number, readonly sequences: number, readonly label = 'sequence-logprob', readonly shareScratch?: SequenceLogprobHead) {
    super(gpu);
    if (!(Number.isInteger(sequences) && sequences >= 1)) throw new Error(`a sequence log-prob head needs at least one sequence, got ${sequences}`);
    this.targets = this.storage(N * 4, 'targets');
    this.seqOf = this.storage(N * 4, 'seqOf');
    this.sums = this.storage(sequences * 4, 'sequence-logp-sums');
    this.counts = this.storage(sequences * 4, 'sequence-token-counts');
    this.dSeq = this.storage(sequences * 4, 'dSequence');
  }

  recordForward(prog: Program, hidden: GPUBuffer): void {
    this.forward = recordSequenceLogprobForward(prog, {
      hidden, lmHead: this.lmHead, targets: this.targets, seqOf: this.seqOf, N: this.N, sequences: this.sequences, sums: this.sums, counts: this.counts,
      logits: this.shareScratch?.logitsScratch,
    }, this.label);
  }

  recordBackward(prog: Program, dHidden: GPUBuffer): void {
    if (!this.forward) throw new Error('record the forward of the head first');
    recordSequenceLogprobBackward(prog, this.forward, this.dSeq, dHidden);
  }

  /** The logits chunk scratch of the recorded forward. */
  get logitsScratch(): GPUBuffer | undefined {
    return this.forward?.pass.logits;
  }

  setSequences(targets: Int32Array, seqOf: Uint32Array): void {
    if (targets.length !== this.N || seqOf.length !== this.N) throw new Error(`${targets.length} targets and ${seqOf.length} sequence ids, the head expects ${this.N}`);
    this.gpu.write(this.targets, targets);
    this.gpu.write(this.seqOf, seqOf);
  }

  setSequenceGrad(dSeq: Float32Array): void {
    if (dSeq.length !== this.sequences) throw new Error(`${dSeq.length} sequence gradients, the head has ${this.sequences} sequences`);
    this.gpu.write(this.dSeq, dSeq);
  }

  /** Read back sums and counts (tests and evaluation; a training step keeps them on the GPU). */
  async read(): Promise<{ sums: Float32Array; counts: Float32Array }> {
    return { sums: await this.gpu.readF32(this.sums, this.sequences), counts: await this.gpu.readF32(this.counts, this.sequences) };
  }
}
