// Qwen3 weights from an HF checkpoint to the GPU: matrices as row-split GpuMatrix (f32 or bf16), norm
// vectors as f32 buffers. Every matrix is read part by part from the file, so the largest host allocation
// is one part, and every value is checked to be finite on the way.
import { fileError } from '../errors.js';
import type { Gpu } from '../gpu/device.js';
import { packBf16 } from '../gpu/dtype.js';
import { releaseMatrix, uploadMatrix, type GpuMatrix, type WeightDType } from '../gpu/matrix.js';
import type { Qwen3Config } from './config.js';
import { bytesToF32, dtypeBytes, type SafetensorsReader } from './safetensors-format.js';

export interface LayerWeights {
  inputNorm: GPUBuffer;
  postAttnNorm: GPUBuffer;
  qNorm: GPUBuffer;
  kNorm: GPUBuffer;
  q: GpuMatrix;
  k: GpuMatrix;
  v: GpuMatrix;
  o: GpuMatrix;
  gate: GpuMatrix;
  up: GpuMatrix;
  down: GpuMatrix;
}

export interface Qwen3Weights {
  embed: GpuMatrix;
  /** The same object as `embed` when the embeddings are tied. */
  lmHead: GpuMatrix;
  finalNorm: GPUBuffer;
  layers: LayerWeights[];
}

type MatrixKey = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';
type NormKey = 'inputNorm' | 'postAttnNorm' | 'qNorm' | 'kNorm';

/** HF tensor name suffixes inside `model.layers.N.` and the [rows, cols] each must have. */
function layerMatrices(c: Qwen3Config): Record<MatrixKey, [string, number, number]> {
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  return {
    q: ['self_attn.q_proj.weight', qDim, c.hiddenSize],
    k: ['self_attn.k_proj.weight', kvDim, c.hiddenSize],
    v: ['self_attn.v_proj.weight', kvDim, c.hiddenSize],
    o: ['self_attn.o_proj.weight', c.hiddenSize, qDim],
    gate: ['mlp.gate_proj.weight', c.intermediateSize, c.hiddenSize],
    up: ['mlp.up_proj.weight', c.intermediateSize, c.hiddenSize],
    down: ['mlp.down_proj.weight', c.hiddenSize, c.intermediateSize],
  };
}

function layerNorms(c: Qwen3Config): Record<NormKey, [string, number]> {
  return {
    inputNorm: ['input_layernorm.weight', c.hiddenSize],
    postAttnNorm: ['post_attention_layernorm.weight', c.hiddenSize],
    qNorm: ['self_attn.q_norm.weight', c.headDim],
    kNorm: ['self_attn.k_norm.weight', c.headDim],
  };
}

/** Every tensor name a Qwen3 checkpoint with this config holds, with its shape. */
export function qwen3TensorShapes(c: Qwen3Config): Map<string, number[]> {
  const shapes = new Map<string, number[]>([['model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]]]);
  for (let l = 0; l < c.numLayers; l++) {
    for (const [name, n] of Object.values(layerNorms(c))) shapes.set(`model.layers.${l}.${name}`, [n]);
    for (const [name, rows, cols] of Object.values(layerMatrices(c))) shapes.set(`model.layers.${l}.${name}`, [rows, cols]);
  }
  shapes.set('model.norm.weight', [c.hiddenSize]);
  if (!c.tieWordEmbeddings) shapes.set('lm_head.weight', [c.vocabSize, c.hiddenSize]);
  return shapes;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);
// Buffers some exporters save that hold no weights (RoPE frequencies are recomputed from rope_theta).
const IGNORED_TENSOR = /(^|\.)rotary_emb\.inv_freq$/;

/** Check that the checkpoint holds exactly the tensors the config implies, with the right shapes and float dtypes. */
function checkTensors(ckpt: SafetensorsReader, c: Qwen3Config): void {
  const expected = qwen3TensorShapes(c);
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
    throw fileError(ckpt.path, `unexpected tensor ${t.name} (not part of a Qwen3 model with this config.json)`);
  }
}

function checkFinite(ckpt: SafetensorsReader, name: string, values: Float32Array, firstIndex: number): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) throw fileError(ckpt.path, `tensor ${name} has a non-finite value (${values[i]}) at element ${firstIndex + i}`);
  }
}

/** Upload a [rows, cols] checkpoint matrix, reading only each part's rows from the file. */
function loadMatrix(gpu: Gpu, ckpt: SafetensorsReader, name: string, dtype: WeightDType): GpuMatrix {
  const t = ckpt.info(name);
  const [rows, cols] = t.shape as [number, number];
  const fileRowBytes = cols * dtypeBytes(t.dtype);
  return uploadMatrix(gpu, rows, cols, dtype, (start, count) => {
    const bytes = ckpt.readBytes(name, start * fileRowBytes, count * fileRowBytes);
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

/** Load a Qwen3 checkpoint onto the GPU with matrices in `dtype`; throws one UserError for the first problem. */
export function loadQwen3Weights(gpu: Gpu, ckpt: SafetensorsReader, config: Qwen3Config, dtype: WeightDType): Qwen3Weights {
  checkTensors(ckpt, config);
  const matrices: GpuMatrix[] = [];
  const norms: GPUBuffer[] = [];
  const matrix = (name: string) => {
    const m = loadMatrix(gpu, ckpt, name, dtype);
    matrices.push(m);
    return m;
  };
  const norm = (name: string) => {
    const b = loadNorm(gpu, ckpt, name);
    norms.push(b);
    return b;
  };
  try {
    const embed = matrix('model.embed_tokens.weight');
    const layers: LayerWeights[] = [];
    for (let l = 0; l < config.numLayers; l++) {
      const prefix = `model.layers.${l}.`;
      const m = layerMatrices(config);
      const n = layerNorms(config);
      layers.push({
        inputNorm: norm(prefix + n.inputNorm[0]),
        postAttnNorm: norm(prefix + n.postAttnNorm[0]),
        qNorm: norm(prefix + n.qNorm[0]),
        kNorm: norm(prefix + n.kNorm[0]),
        q: matrix(prefix + m.q[0]),
        k: matrix(prefix + m.k[0]),
        v: matrix(prefix + m.v[0]),
        o: matrix(prefix + m.o[0]),
        gate: matrix(prefix + m.gate[0]),
        up: matrix(prefix + m.up[0]),
        down: matrix(prefix + m.down[0]),
      });
    }
    const finalNorm = norm('model.norm.weight');
    const lmHead = config.tieWordEmbeddings ? embed : matrix('lm_head.weight');
    return { embed, lmHead, finalNorm, layers };
  } catch (e) {
    // A bad value part-way must not leak the GPU memory already uploaded.
    for (const m of matrices) releaseMatrix(gpu, m);
    for (const b of norms) gpu.release(b);
    throw e;
  }
}

export function releaseQwen3Weights(gpu: Gpu, w: Qwen3Weights): void {
  if (w.lmHead !== w.embed) releaseMatrix(gpu, w.lmHead);
  releaseMatrix(gpu, w.embed);
  gpu.release(w.finalNorm);
  for (const l of w.layers) {
    for (const b of [l.inputNorm, l.postAttnNorm, l.qNorm, l.kNorm]) gpu.release(b);
    for (const m of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) releaseMatrix(gpu, m);
  }
  w.layers = [];
}
