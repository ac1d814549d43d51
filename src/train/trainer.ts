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
import type { LoraWeights } from './lora.js';

export interface StepBatch extends GraphBatch {
  targets: Int32Array;
}

export interface TrainerOptions {
  B: number;
  T: number;
  recompute: boolean;
  hyper: AdamWHyper;
  /** Seed of the LoRA dropout masks (used when the adapter's dropout is > 0). */
  seed?: number;
}

export function countTargets(targets: Int32Array): number {
  let n = 0;
  for (const t of targets) if (t !== -100) n++;
  return n;
}

export class LoraTrainer {
  readonly graph: Qwen3Graph;
  readonly optimizer: AdamW;
  private readonly update: Program;
  private readonly accumulate: Program;
  private readonly resetLoss: Program;
  /** f32[1]: sum of optimizer-step losses since the last read. */
  private readonly lossSum: GPUBuffer;
  private stepsSinceRead = 0;
  private evalGraph?: Qwen3Graph;
  private readonly owned: GPUBuffer[];

  constructor(readonly gpu: Gpu, readonly config: ModelConfig, readonly weights: ModelWeights, readonly lora: LoraWeights, readonly opts: TrainerOptions) {
    this.graph = new Qwen3Graph(gpu, config, weights, { B: opts.B, T: opts.T, mode: 'train', lora, recompute: opts.recompute });
    const r = lora.settings.rank;
    const tensors = lora.layers.flatMap((layer) => Object.values(layer).flatMap((p) => [
      { param: p.A, grad: p.dA, count: r * p.inDim },
      { param: p.B, grad: p.dB, count: p.outDim * r },
    ]));
    this.update = new Program(gpu);
    this.accumulate = new Program(gpu);
    this.resetLoss = new Program(gpu);
    // The gradient norm over the adapter's few gradient buffers rather than tensor by tensor.
    this.optimizer = gpu.inCategory('optimizer', () => new AdamW(gpu, tensors, opts.hyper, lora.grads));
    const lossSum = gpu.storage(4, 'lossSum');
    this.lossSum = lossSum;
    // The programs' uniforms and scratch are freed with the trainer.
    this.owned = [
      ...gpu.inCategory('optimizer', () => gpu.collect(() => this.optimizer.record(this.update))),
      ...gpu.collect(() => {
        recordAddInPlace(this.accumulate, { dst: lossSum, src: this.graph.loss, count: 1 });
        recordFill(this.resetLoss, { dst: lossSum, count: 1, value: 0 });
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
    const total = micro.reduce((n, b) => n + countTargets(b.targets), 0);
    const inv = total > 0 ? 1 / total : 0;
    this.graph.zeroGrads.run();
    for (const [k, b] of micro.entries()) {
      this.graph.setBatch(b, inv);
      this.graph.setDropoutStep(this.opts.seed ?? 0, (t - 1) * micro.length + k);
      this.graph.program.run();
      this.accumulate.run();
    }
    this.optimizer.setStep(t, lr);
    this.update.run();
    this.stepsSinceRead++;
  }

  /** The programs one optimizer step of one micro-batch runs, in order (for counting what a step dispatches). */
  get stepPrograms(): Program[] {
    return [this.graph.zeroGrads, this.graph.program, this.accumulate, this.update];
  }

  /** Mean loss of the optimizer steps since the last call (the only readback of the loop). */
  async readMeanLoss(): Promise<number> {
    const sum = (await this.gpu.readF32(this.lossSum, 1))[0]!;
    const mean = sum / Math.max(1, this.stepsSinceRead);
    this.resetLoss.run();
    this.stepsSinceRead = 0;
    return mean;
  }

  /** Mean token loss over `batches` (of any one batch size) without touching the adapter. */
  async evaluate(batches: StepBatch[], B = this.opts.B): Promise<number> {
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
  }
}
