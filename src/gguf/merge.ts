// LoRA merge on the GPU before export: W' = W + s·B·A, one weight at a time, in row blocks that fit a
// storage binding, so a merged model is never held in memory whole.
import type { Gpu } from '../gpu/device.js';
import { Program } from '../gpu/program.js';
import { recordGemm } from '../kernels/gemm.js';
import type { ModelConfig } from '../model/model-config.js';
import type { SafetensorsReader } from '../model/safetensors-format.js';
import { modelTensors, peftTensorName } from '../model/families.js';
import { loraScale, readLoraTensors, type LoraWeights } from '../train/lora-weights.js';
import type { SourceTensor } from './model-gguf.js';

/** W [out, in] + scale · B [out, r] · A [r, in], computed on the GPU. */
export async function mergeLoraWeight(gpu: Gpu, W: Float32Array, out: number, inDim: number, A: Float32Array, B: Float32Array, r: number, scale: number): Promise<Float32Array> {
  const rowsPerBlock = Math.max(1, Math.floor(gpu.maxBindingBytes / (inDim * 4)));
  const result = new Float32Array(W.length);
  const aBuf = gpu.upload(A, 'merge.A');
  try {
    for (let r0 = 0; r0 < out; r0 += rowsPerBlock) {
      const rows = Math.min(rowsPerBlock, out - r0);
      const wBuf = gpu.upload(W.subarray(r0 * inDim, (r0 + rows) * inDim), 'merge.W');
      const bBuf = gpu.upload(B.subarray(r0 * r, (r0 + rows) * r), 'merge.B');
      const prog = new Program(gpu);
      const owned = gpu.collect(() => recordGemm(prog, { a: bBuf, b: aBuf, c: wBuf, M: rows, N: inDim, K: r, alpha: scale, beta: 1 }, 'merge'));
      prog.run();
      result.set(await gpu.readF32(wBuf, rows * inDim), r0 * inDim);
      for (const b of [wBuf, bBuf, ...owned]) gpu.release(b);
    }
  } finally {
    gpu.release(aBuf);
  }
  return result;
}

/**
 * Every weight of a checkpoint as export sources, in HF order; adapted projections are merged with the
 * adapter when read. A tied model lists no lm_head.
 */
export async function mergedTensorSources(gpu: Gpu, ckpt: SafetensorsReader, config: ModelConfig, lora?: LoraWeights): Promise<SourceTensor[]> {
  const factors = lora ? await readLoraTensors(gpu, lora) : new Map<string, Float32Array>();
  const scale = lora ? loraScale(lora.settings) : 0;
  const sources: SourceTensor[] = [];
  for (const { hf: name, shape, layer, projection } of modelTensors(config)) {
    if (!ckpt.tensors.has(name)) continue;
    const adapted = lora && projection && lora.layers[layer!]?.[projection];
    const [A, B] = adapted ? (['A', 'B'] as const).map((f) => factors.get(peftTensorName(config, layer!, projection, f))!) : [];
    sources.push({
      name,
      shape,
      read: adapted
        ? () => mergeLoraWeight(gpu, ckpt.readF32(name), shape[0]!, shape[1]!, A!, B!, lora.settings.rank, scale)
        : () => ckpt.readF32(name),
    });
  }
  return sources;
}
