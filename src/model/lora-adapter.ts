// A LoRA adapter as the model graph uses it: per layer and adapted projection, f32 factors A [r, in] and
// B [out, r] on the GPU with their gradients (ranges of a few flat buffers), and the scale of the B·A term. Making, loading and saving adapters
// is train/lora-weights.ts's.
import type { BufferRange } from '../gpu/program.js';
import type { ModelConfig, Projection } from './family.js';

export interface LoraSettings {
  rank: number;
  alpha: number;
  /** rsLoRA: scale alpha/sqrt(r) instead of alpha/r. */
  rslora: boolean;
  dropout: number;
  targets: Projection[];
}

export function loraScale(s: LoraSettings): number {
  return s.rslora ? s.alpha / Math.sqrt(s.rank) : s.alpha / s.rank;
}

export type { BufferRange } from '../gpu/program.js';

/** A flat f32 buffer holding many tensors at 256-aligned ranges (`count` floats, the gaps between ranges zero). */
export interface FlatBuffer {
  buffer: GPUBuffer;
  count: number;
}

/** One adapted projection: factors and their gradients (f32). */
export interface LoraPair {
  /** Ranges of one of the adapter's factor buffers (`LoraWeights.params`). */
  A: BufferRange;
  B: BufferRange;
  /** The same ranges of the matching gradient buffer (`LoraWeights.grads`). */
  dA: BufferRange;
  dB: BufferRange;
  inDim: number;
  outDim: number;
}

export interface LoraWeights {
  /** The model the adapter belongs to (its family names the tensors). */
  config: ModelConfig;
  settings: LoraSettings;
  layers: Partial<Record<Projection, LoraPair>>[];
  /**
   * Every A and B lies in these few f32 buffers (each within one binding), every dA and dB at the same place of
   * `grads`: zeroing the gradients, their norm and the AdamW update take a dispatch or two per buffer instead of
   * one per tensor.
   */
  params: FlatBuffer[];
  grads: FlatBuffer[];
}
