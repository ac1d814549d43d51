// GPU memory of a LoRA training job, computed from the shapes before anything is allocated: the base weights, the
// activations and gradients of Qwen3Graph, the LoRA factors and their gradients, AdamW's moments, and the kernels'
// scratch (cross-entropy chunk, attention statistics, RoPE tables, uniform parameters). It mirrors what
// Qwen3Graph, LoraTrainer and the kernels allocate, so it can refuse a job that cannot fit instead of failing
// half-way through an allocation. WebGPU does not expose total memory: a budget comes from the caller or
// LORAFORGE_GPU_MEMORY_BYTES.
import type { Gpu } from '../gpu/device.js';
import { matrixRowBytes, type MatrixDType } from '../gpu/matrix.js';
import type { ModelConfig } from '../model/config.js';
import { UserError } from '../errors.js';
import { type Projection } from '../model/family.js';
import { modelTensors, projectionDims } from '../model/families.js';

export interface MemoryPlanOptions {
  /** Rows per micro-batch and tokens per row. */
  B: number;
  T: number;
  rank: number;
  targets: Projection[];
  /** Gradient checkpointing: one layer's activations instead of all of them. */
  recompute: boolean;
  /** How the base matrices are held (with `matrixDtype`: the embedding's, for the advice given). */
  weightDtype: MatrixDType;
  /** Per matrix by HF tensor name, where they differ (a GGUF base's type mix); default `weightDtype`. */
  matrixDtype?: (name: string) => MatrixDType;
  /** Bytes one storage binding may span (the cross-entropy chunk is sized from it); default 128 MiB. */
  maxBindingBytes?: number;
  /** LoRA dropout probability: above 0, one scratch [N, largest adapted input] holds the dropped input. */
  dropout?: number;
}

export interface MemoryEstimate {
  weights: number;
  activations: number;
  lora: number;
  optimizer: number;
  scratch: number;
  total: number;
  /** The largest single buffer (weights are split to fit a binding; activations are not). */
  largestBuffer: { name: string; bytes: number };
}

/** The Gpu rounds every buffer up to 16 bytes. */
const buf = (bytes: number) => Math.max(16, Math.ceil(bytes / 16) * 16);
const F32 = 4;
/** Mean size of a kernel's uniform parameter buffer (16 to 32 bytes). */
const UNIFORM_BYTES = 24;
/** Cross-entropy's default chunk budget (kernels/cross-entropy.ts). */
const CE_CHUNK_BYTES = 64 * 1024 * 1024;
/** Attention backward keeps 12 bytes of statistics per query row and head. */
const ATTN_STAT_BYTES = 12;
/** Grad-norm partial sums: one per 4096 gradient values, at most 64 per tensor. */
const GRAD_NORM_ELEMS = 256 * 16;
const GRAD_NORM_MAX_PARTIALS = 64;
const DEFAULT_BINDING = 128 * 1024 * 1024;

export function estimateTrainingMemory(c: ModelConfig, o: MemoryPlanOptions): MemoryEstimate {
  const N = o.B * o.T;
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const L = c.numLayers;
  const binding = o.maxBindingBytes ?? DEFAULT_BINDING;
  let largest = { name: '', bytes: 0 };
  const track = (name: string, bytes: number) => {
    if (bytes > largest.bytes) largest = { name, bytes };
    return buf(bytes);
  };

  // Base weights: matrices in their dtype (block formats included), split by rows into binding-sized parts;
  // norms f32.
  const matrix = (name: string, rows: number, cols: number) => {
    const rowBytes = matrixRowBytes(cols, o.matrixDtype?.(name) ?? o.weightDtype);
    const rowsPerPart = Math.max(1, Math.floor(binding / rowBytes));
    let total = 0;
    for (let start = 0; start < rows; start += rowsPerPart) total += buf(Math.min(rowsPerPart, rows - start) * rowBytes);
    return total;
  };
  const weights = modelTensors(c).reduce((sum, t) => sum + (t.shape.length === 2 ? matrix(t.hf, t.shape[0]!, t.shape[1]!) : buf(t.shape[0]! * F32)), 0);

  // LoRA factors A [r, in], B [out, r] and their gradients, per layer and target.
  const pairs = o.targets.map((p) => projectionDims(c, p));
  const loraLayer = pairs.reduce((s, [i, out]) => s + 2 * (buf(o.rank * i * F32) + buf(out * o.rank * F32)), 0);
  const lora = L * loraLayer;
  for (const [p, [i, out]] of o.targets.map((t, k) => [t, pairs[k]!] as const)) track(`LoRA ${p} factor`, Math.max(i, out) * o.rank * F32);

  // AdamW: m and v per factor; the global-norm partials; stats and step parameters.
  const optimizer = L * loraLayer
    + buf(L * pairs.reduce((s, [i, out]) => s + Math.min(GRAD_NORM_MAX_PARTIALS, Math.ceil((o.rank * i) / GRAD_NORM_ELEMS)) + Math.min(GRAD_NORM_MAX_PARTIALS, Math.ceil((out * o.rank) / GRAD_NORM_ELEMS)), 0) * F32)
    + 3 * buf(F32) + buf(20);

  // Activations kept for the backward (all layers, or one with recomputation), the residual stream, gradients.
  const nT = o.targets.length;
  const layerActs = track('hidden activation', N * H * F32) * 3 + buf(N * F32) * 2
    + track('attention activation', N * q * F32) * 3 + buf(N * c.numHeads * F32) * 2
    + track('key/value activation', N * kv * F32) * 3 + buf(N * c.numKvHeads * F32)
    + track('MLP activation', N * I * F32) * 3 + nT * buf(N * o.rank * F32);
  const grads = buf(N * H * F32) * 2 + buf(N * I * F32) * 3 + buf(N * q * F32) * 3 + buf(N * kv * F32) * 3 + buf(N * o.rank * F32);
  const activations = 4 * buf(N * 4) + 2 * buf(F32) + (L + 2) * buf(N * H * F32) + buf(N * F32)
    + (o.recompute ? 1 : L) * layerActs + grads + buf(F32);

  // Kernel scratch: the cross-entropy logits chunk and row statistics, attention-backward statistics per layer,
  // a RoPE frequency table per launch, and a uniform per dispatch.
  const rows = Math.floor(Math.min(CE_CHUNK_BYTES, binding) / (N * F32));
  const chunk = Math.min(c.vocabSize, rows >= 64 ? rows - (rows % 64) : rows);
  const ceChunks = Math.ceil(c.vocabSize / chunk);
  const ropeLaunches = L * (o.recompute ? 6 : 4);
  const adapted = nT;
  const perLayerDispatches = (o.recompute ? 2 : 1) * (4 + 7 + 2 * adapted + 2 + 1 + 2 + 1) + (7 + 4 * adapted + 1 + 4 + 3 + 2);
  const dispatches = 1 + L * perLayerDispatches + 3 * ceChunks + 3 + L * (2 * nT) * 2 + L * 2 * nT + 3;
  const scratch = track('cross-entropy logits chunk', N * chunk * F32) + 4 * buf(N * F32)
    + L * buf(N * c.numHeads * ATTN_STAT_BYTES) + ropeLaunches * buf((c.headDim / 2) * F32) + dispatches * UNIFORM_BYTES
    + ((o.dropout ?? 0) > 0 ? track('LoRA dropout scratch', N * Math.max(...pairs.map(([i]) => i)) * F32) + buf(2 * 4) : 0);

  const total = weights + activations + lora + optimizer + scratch;
  return { weights, activations, lora, optimizer, scratch, total, largestBuffer: largest };
}

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const fmt = (bytes: number) => (bytes >= GIB ? `${(bytes / GIB).toFixed(2)} GiB` : `${(bytes / MIB).toFixed(1)} MiB`);

/** The budget from LORAFORGE_GPU_MEMORY_BYTES, if set. */
export function memoryBudgetFromEnv(): number | undefined {
  const raw = process.env.LORAFORGE_GPU_MEMORY_BYTES;
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new UserError(`LORAFORGE_GPU_MEMORY_BYTES must be a positive number of bytes, got '${raw}'`);
  return n;
}

/**
 * Refuse a job the adapter cannot hold: a buffer over maxBufferSize or over one binding, or a total over `budget`
 * (default: LORAFORGE_GPU_MEMORY_BYTES; unchecked when neither is given). The message gives the numbers and what to
 * change.
 */
export function checkMemory(e: MemoryEstimate, gpu: Pick<Gpu, 'maxBindingBytes'> & { device: { limits: { maxBufferSize: number } } }, o: { budget?: number; recompute: boolean; weightDtype: MatrixDType }): void {
  const hints = ['lower per_device_train_batch_size or cutoff_len'];
  if (!o.recompute) hints.push('turn gradient checkpointing on (disable_gradient_checkpointing: false)');
  if (o.weightDtype === 'f32') hints.push('keep the weights in bf16 (bf16: true)');
  const advice = hints.join(', or ');
  const limit = Math.min(gpu.device.limits.maxBufferSize, gpu.maxBindingBytes);
  if (e.largestBuffer.bytes > limit) {
    throw new UserError(`the ${e.largestBuffer.name} buffer needs ${fmt(e.largestBuffer.bytes)}, more than this GPU binds at once (${fmt(limit)}): ${advice}`);
  }
  const budget = o.budget ?? memoryBudgetFromEnv();
  if (budget !== undefined && e.total > budget) {
    const parts = `weights ${fmt(e.weights)}, activations ${fmt(e.activations)}, LoRA ${fmt(e.lora)}, optimizer ${fmt(e.optimizer)}, scratch ${fmt(e.scratch)}`;
    throw new UserError(`training needs about ${fmt(e.total)} of GPU memory (${parts}) but the budget is ${fmt(budget)} (LORAFORGE_GPU_MEMORY_BYTES): ${advice}`);
  }
}
