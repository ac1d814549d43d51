// A model's weights from an HF checkpoint to the GPU, by the tensor table of its family (families.ts): matrices
// as row-split GpuMatrix (f32 or bf16), vectors (norm weights, biases) as f32 buffers. Every matrix is read part by part from the file, so the largest host allocation
// is one part, and every value is checked to be finite on the way.
import { fileError } from '../errors.js';
import type { Gpu } from '../gpu/device.js';
import { packBf16 } from '../gpu/dtype.js';
import { GgmlType } from '../gpu/ggml-types.js';
import { allocateMatrix, dtypeOfGgmlType, releaseMatrix, uploadMatrix, type GpuMatrix, type MatrixDType, type WeightDType } from '../gpu/matrix.js';
import type { ModelConfig } from './family.js';
import { buildModel, familyOf, modelTensorShapes, type LayerOf, type ModelOf, type ModelTensor } from './families.js';
import { bytesToF32, dtypeBytes, type SafetensorsReader } from './safetensors-format.js';

/** One decoder layer on the GPU: its vectors (those of the family's recipe) and its projection weights. */
export type LayerWeights = LayerOf<GpuMatrix, GPUBuffer>;
export type ModelWeights = ModelOf<GpuMatrix, GPUBuffer>;

/**
 * Quantizes matrices while they are uploaded (LLaMA-Factory's quantization_bit): the ggml type each gets and the
 * quantizer (gguf/quantize.ts, handed in from above: the model layer does not import the GGUF code).
 */
export interface MatrixQuantizer {
  type(t: ModelTensor): GgmlType;
  quantize(type: GgmlType, rows: Float32Array, rowLength: number): Uint8Array;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);
// Buffers some exporters save that hold no weights (RoPE frequencies are recomputed from rope_theta).
const IGNORED_TENSOR = /(^|\.)rotary_emb\.inv_freq$/;

/** Check that the checkpoint holds exactly the tensors the config implies, with the right shapes and float dtypes. */
function checkTensors(ckpt: SafetensorsReader, c: ModelConfig): void {
  const expected = modelTensorShapes(c);
  for (const [name, shape] of expected) {
    const t = ckpt.tensors.get(name);
    if (!t) throw fileError(ckpt.path, `tensor ${name} is missing (expected shape [${shape}] from config.json)`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw fileError(ckpt.path, `tensor ${name} has shape [${t.shape}], config.json implies [${shape}]`);
    }
    if (!FLOAT_DTYPES.has(t.dtype)) throw fileError(ckpt.path, `tensor ${name} has dtype ${t.dtype}, expected a float type`);
  }
  for (const t of ckpt.tensors.values()) {
    if (expected.has(t.name) || IGNORED_TENSOR.test(t.name)) continue;
    // Tied checkpoints sometimes still carry the (identical) lm_head; transformers ignores it.
    if (t.name === 'lm_head.weight' && c.tieWordEmbeddings) continue;
    throw fileError(ckpt.path, `unexpected tensor ${t.name} (not part of a ${familyOf(c).displayName} model with this config.json)`);
  }
}

function checkFinite(ckpt: SafetensorsReader, name: string, values: Float32Array, firstIndex: number): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) throw fileError(ckpt.path, `tensor ${name} has a non-finite value (${values[i]}) at element ${firstIndex + i}`);
  }
}

/**
 * Upload a [rows, cols] checkpoint matrix, reading only each part's rows from the file; quantized to `quantized`
 * (a ggml type the GPU reads) when given.
 */
function loadMatrix(gpu: Gpu, ckpt: SafetensorsReader, name: string, dtype: WeightDType, quantized?: { type: GgmlType; q: MatrixQuantizer }): GpuMatrix {
  const t = ckpt.info(name);
  const [rows, cols] = t.shape as [number, number];
  const fileRowBytes = cols * dtypeBytes(t.dtype);
  const stored = quantized && quantized.type !== GgmlType.F32 ? dtypeOfGgmlType(quantized.type) : dtype;
  if (!stored) throw new Error(`${name}: ggml type ${quantized!.type} is not one the GPU reads`);
  return uploadMatrix(gpu, rows, cols, stored, (start, count) => {
    const bytes = ckpt.readBytes(name, start * fileRowBytes, count * fileRowBytes);
    if (stored !== dtype) {
      const values = bytesToF32(t.dtype, bytes);
      checkFinite(ckpt, name, values, start * cols);
      return quantized!.q.quantize(quantized!.type, values, cols);
    }
    if (t.dtype === 'BF16' && dtype === 'bf16') {
      // Same layout on both sides: check exponent bits (all ones = Inf/NaN) and upload the bytes as they are.
      const h = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
      for (let i = 0; i < h.length; i++) {
        if ((h[i]! & 0x7f80) === 0x7f80) throw fileError(ckpt.path, `tensor ${name} has a non-finite value at element ${start * cols + i}`);
      }
      return bytes;
    }
    const values = bytesToF32(t.dtype, bytes);
    checkFinite(ckpt, name, values, start * cols);
    return dtype === 'bf16' ? packBf16(values) : values;
  }, name);
}

function loadNorm(gpu: Gpu, ckpt: SafetensorsReader, name: string): GPUBuffer {
  const values = ckpt.readF32(name);
  checkFinite(ckpt, name, values, 0);
  return gpu.upload(values, name);
}

/**
 * Load a checkpoint onto the GPU with matrices in `dtype`, or each in the type `quantizer` gives it; throws one
 * UserError for the first problem.
 */
export function loadModelWeights(gpu: Gpu, ckpt: SafetensorsReader, config: ModelConfig, dtype: WeightDType, quantizer?: MatrixQuantizer): ModelWeights {
  checkTensors(ckpt, config);
  return uploadModel(
    gpu,
    config,
    (t) => loadMatrix(gpu, ckpt, t.hf, dtype, quantizer && { type: quantizer.type(t), q: quantizer }),
    (t) => loadNorm(gpu, ckpt, t.hf),
  );
}

/**
 * Build a model's weights with `matrix` and `vector` (each uploading one tensor); if one throws, what was already
 * uploaded is released (a bad value part-way must not leak GPU memory) and the error propagates.
 */
export function uploadModel(gpu: Gpu, config: ModelConfig, matrix: (t: ModelTensor) => GpuMatrix, vector: (t: ModelTensor) => GPUBuffer): ModelWeights {
  const matrices: GpuMatrix[] = [];
  const vectors: GPUBuffer[] = [];
  try {
    return buildModel(
      config,
      (t) => {
        const m = matrix(t);
        matrices.push(m);
        return m;
      },
      (t) => {
        const b = vector(t);
        vectors.push(b);
        return b;
      },
    );
  } catch (e) {
    for (const m of matrices) releaseMatrix(gpu, m);
    for (const b of vectors) gpu.release(b);
    throw e;
  }
}

/** Weights of the right shapes and formats without data (the memory plan's dry run): `dtypeOf` by HF tensor name. */
export function allocateModelWeights(gpu: Gpu, config: ModelConfig, dtypeOf: (name: string) => MatrixDType): ModelWeights {
  return buildModel(
    config,
    (t) => allocateMatrix(gpu, t.shape[0]!, t.shape[1]!, dtypeOf(t.hf), t.hf),
    (t) => gpu.storage(t.shape[0]! * 4, t.hf),
  );
}

/** The vector buffers a layer holds. */
export function layerVectorBuffers(l: LayerWeights): GPUBuffer[] {
  return [l.inputNorm, l.postAttnNorm, l.qNorm, l.kNorm, l.qBias, l.kBias, l.vBias].filter((b) => b !== undefined);
}

export function releaseModelWeights(gpu: Gpu, w: ModelWeights): void {
  if (w.lmHead !== w.embed) releaseMatrix(gpu, w.lmHead);
  releaseMatrix(gpu, w.embed);
  gpu.release(w.finalNorm);
  for (const l of w.layers) {
    for (const b of layerVectorBuffers(l)) gpu.release(b);
    for (const m of Object.values(l.proj)) releaseMatrix(gpu, m);
  }
  w.layers = [];
}
