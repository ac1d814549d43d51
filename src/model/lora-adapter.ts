// A LoRA adapter as the model graph uses it: per layer and adapted projection, f32 factors A [r, in] and
// B [out, r] on the GPU with their gradients, and the scale of the B·A term. Making, loading and saving adapters
// is train/lora-weights.ts's.
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

/** A byte range of a buffer (offset a multiple of 256, WebGPU's largest storage offset alignment). */
export interface BufferRange {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** One adapted projection: factors and their gradients (f32). */
export interface LoraPair {
  A: GPUBuffer;
  B: GPUBuffer;
  /** Ranges of one of the adapter's gradient buffers (`LoraWeights.grads`). */
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
   * Every dA and dB lies in these few f32 buffers (each within one binding, the gaps between ranges zero), so
   * zeroing the gradients and their norm take a dispatch or two per buffer instead of one per tensor.
   */
  grads: { buffer: GPUBuffer; count: number }[];
}
