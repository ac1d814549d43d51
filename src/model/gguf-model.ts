// A GGUF file as the frozen base: the model config from its hyper-parameter metadata, the tokenizer from its
// tokenizer metadata (gguf-tokenizer.ts), and its weights onto the GPU as they are stored: block formats stay
// blocks (the kernels dequantize in registers), F16/BF16/F32 matrices stay 16/16/32-bit (F32 becomes bf16 when
// the run asks for bf16). Norm vectors become f32. Each matrix is read part by part from the file. No Node API.
import { fileError } from '../errors.js';
import type { Gpu } from '../gpu/device.js';
import { dequantizeRows } from '../gpu/dequantize.js';
import { packBf16 } from '../gpu/dtype.js';
import { GgmlType, ggmlTypeName } from '../gpu/ggml-types.js';
import { dtypeOfGgmlType, matrixRowBytes, uploadMatrix, type WeightDType } from '../gpu/matrix.js';
import { FAMILIES, modelTensors, type ModelTensor } from './families.js';
import type { ModelConfig, ModelType } from './family.js';
import { ggufNumber, readGgufTensorBytes, type GgufFile, type GgufTensor } from './gguf-format.js';
import { uploadModel, type ModelWeights } from './weights.js';

/** The model config a GGUF's metadata describes (llama.cpp's `<arch>.*` keys); UserErrors name the file. */
export function ggufModelConfig(f: GgufFile): ModelConfig {
  const arch = f.metadata.get('general.architecture');
  const family = Object.values(FAMILIES).find((m) => m.ggufArchitecture === arch);
  if (!family) throw fileError(f.path, `architecture ${JSON.stringify(arch)} is not supported (${Object.values(FAMILIES).map((m) => m.ggufArchitecture).join(', ')})`);
  const type = f.metadata.get('general.type');
  if (type !== undefined && type !== 'model') throw fileError(f.path, `general.type is ${JSON.stringify(type)}: a base model is needed, not a LoRA adapter`);
  const scaling = f.metadata.get(`${arch}.rope.scaling.type`);
  if (scaling !== undefined && scaling !== 'none') throw fileError(f.path, `RoPE scaling ${JSON.stringify(scaling)} is not supported`);
  const embed = f.tensors.get(family.embed.gguf);
  if (!embed || embed.ne.length !== 2) throw fileError(f.path, `tensor ${family.embed.gguf} is missing or not a matrix`);
  const hiddenSize = ggufNumber(f, `${arch}.embedding_length`);
  const numHeads = ggufNumber(f, `${arch}.attention.head_count`);
  const tokenId = (key: string): number | null => {
    const v = f.metadata.get(key);
    return typeof v === 'number' ? v : null;
  };
  return {
    modelType: family.modelType as ModelType,
    vocabSize: embed.ne[1]!,
    hiddenSize,
    intermediateSize: ggufNumber(f, `${arch}.feed_forward_length`),
    numLayers: ggufNumber(f, `${arch}.block_count`),
    numHeads,
    numKvHeads: ggufNumber(f, `${arch}.attention.head_count_kv`, numHeads),
    headDim: ggufNumber(f, `${arch}.attention.key_length`, family.defaultHeadDim(hiddenSize, numHeads)),
    rmsNormEps: ggufNumber(f, `${arch}.attention.layer_norm_rms_epsilon`),
    ropeTheta: ggufNumber(f, `${arch}.rope.freq_base`, 10000),
    maxPositionEmbeddings: ggufNumber(f, `${arch}.context_length`),
    tieWordEmbeddings: !f.tensors.has(family.lmHead.gguf),
    bosTokenId: tokenId('tokenizer.ggml.bos_token_id'),
    eosTokenId: tokenId('tokenizer.ggml.eos_token_id'),
  };
}

/** The GGUF tensor of a model tensor, checked against the shape the config implies. */
function ggufTensor(f: GgufFile, t: ModelTensor): GgufTensor {
  const g = f.tensors.get(t.gguf);
  if (!g) throw fileError(f.path, `tensor ${t.gguf} is missing (expected shape [${t.shape}] from the metadata)`);
  const ne = [...t.shape].reverse();
  if (g.ne.length !== ne.length || g.ne.some((d, i) => d !== ne[i])) {
    throw fileError(f.path, `tensor ${t.gguf} has ggml dims [${g.ne}], the metadata implies [${ne}]`);
  }
  return g;
}

/**
 * Upload the weights of a GGUF base: matrices in their stored format (F32 as `dtype`), vectors as f32. Throws one
 * UserError for the first problem (a missing tensor, a wrong shape, an extra tensor).
 */
export function loadGgufWeights(gpu: Gpu, f: GgufFile, config: ModelConfig, dtype: WeightDType): ModelWeights {
  const tensors = modelTensors(config);
  const expected = new Set(tensors.map((t) => t.gguf));
  for (const name of f.tensors.keys()) {
    // rope_freqs holds RoPE scaling factors, which a config without rope scaling does not use.
    if (!expected.has(name) && name !== 'rope_freqs.weight') throw fileError(f.path, `unexpected tensor ${name} (not part of this model)`);
  }
  return uploadModel(
    gpu,
    config,
    (t) => {
      const g = ggufTensor(f, t);
      const [rows, cols] = t.shape as [number, number];
      const stored = dtypeOfGgmlType(g.type);
      if (!stored) throw fileError(f.path, `tensor ${t.gguf} is ${ggmlTypeName(g.type)}, which the GPU does not read`);
      const convert = g.type === GgmlType.F32 && dtype === 'bf16';
      const fileRowBytes = matrixRowBytes(cols, stored);
      return uploadMatrix(gpu, rows, cols, convert ? 'bf16' : stored, (start, count) => {
        const bytes = readGgufTensorBytes(f, g, start * fileRowBytes, count * fileRowBytes);
        return convert ? packBf16(dequantizeRows(GgmlType.F32, bytes, count * cols)) : bytes;
      }, t.gguf);
    },
    (t) => {
      const g = ggufTensor(f, t);
      const values = dequantizeRows(g.type, readGgufTensorBytes(f, g), t.shape[0]!);
      for (let i = 0; i < values.length; i++) {
        if (!Number.isFinite(values[i]!)) throw fileError(f.path, `tensor ${t.gguf} has a non-finite value (${values[i]}) at element ${i}`);
      }
      return gpu.upload(values, t.gguf);
    },
  );
}
