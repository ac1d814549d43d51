// Kernel benchmark: weight-matmul TFLOP/s (f32 and bf16 weights) at a model's projection shapes and at one
// square shape, and causal attention forward/backward at the model's head layout.
import { createGpu, type Gpu } from '../src/gpu/device.js';
import { packBf16 } from '../src/gpu/dtype.js';
import { uploadMatrix, type WeightDType } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { recordMatmul } from '../src/kernels/matmul.js';
import { recordAttention } from '../src/kernels/attention.js';
import { recordAttentionBackward } from '../src/kernels/attention-backward.js';
import { PROJECTIONS } from '../src/model/family.js';
import { projectionDims } from '../src/model/families.js';
import { seededRandom } from '../src/random.js';
import { deviceInfo, runInfo, type DeviceInfo } from './env.js';
import { benchConfig } from './model.js';
import { dispatchTimes, round, significant } from './profile.js';

export interface KernelBenchOptions {
  size: string;
  /** M of the projection matmuls (tokens per step). */
  tokens: number;
  /** Side of the square matmul. */
  square: number;
  /** Sequence length of the attention cases (one batch row). */
  attnSeq: number;
  reps: number;
  gpu?: Gpu;
}

export interface MatmulCase {
  name: string;
  dtype: WeightDType;
  M: number;
  N: number;
  K: number;
  ms: number;
  tflops: number;
}

export interface AttentionCase {
  pass: 'forward' | 'backward';
  T: number;
  heads: number;
  kv_heads: number;
  head_dim: number;
  ms: number;
  /** Causal FLOPs counted as forward 2·T²·d·heads (QKᵀ and PV over half the pairs), backward 2.5 times that. */
  tflops: number;
}

export interface KernelBenchResult {
  bench: 'kernels';
  impl: 'loraforge';
  size: string;
  reps: number;
  /** 'gpu-timestamps': summed dispatch times; 'wall-clock': submit-to-done over all repetitions. */
  timing: 'gpu-timestamps' | 'wall-clock';
  matmul: MatmulCase[];
  attention: AttentionCase[];
  device: DeviceInfo;
  date: string;
  commit: string;
  dirty: boolean;
  node: string;
}

export function kernelDefaults(size: string): { tokens: number; square: number; attnSeq: number; reps: number } {
  return size === 'tiny' ? { tokens: 64, square: 256, attnSeq: 64, reps: 2 } : { tokens: 2048, square: 4096, attnSeq: 2048, reps: 10 };
}

/** Milliseconds per run of `prog`, after one untimed run. */
async function timeProgram(gpu: Gpu, prog: Program, reps: number): Promise<number> {
  prog.run();
  await gpu.sync();
  if (gpu.features.timestamps) {
    const times = await dispatchTimes(gpu, Array.from({ length: reps }, () => prog));
    return times.reduce((s, t) => s + t.ns, 0) / 1e6 / reps;
  }
  const start = performance.now();
  for (let i = 0; i < reps; i++) prog.run();
  await gpu.sync();
  return (performance.now() - start) / reps;
}

/** A storage buffer of `count` uniform values in [-1, 1). */
function randomBuffer(gpu: Gpu, count: number, seed: number): GPUBuffer {
  const rand = seededRandom(seed);
  const v = new Float32Array(count);
  for (let i = 0; i < count; i++) v[i] = rand() * 2 - 1;
  return gpu.upload(v);
}

async function matmulCase(gpu: Gpu, name: string, dtype: WeightDType, M: number, N: number, K: number, reps: number): Promise<MatmulCase> {
  const rand = seededRandom(N * 31 + K);
  const x = randomBuffer(gpu, M * K, M + K);
  const w = uploadMatrix(gpu, N, K, dtype, (_s, count) => {
    const v = new Float32Array(count * K);
    for (let i = 0; i < v.length; i++) v[i] = (rand() * 2 - 1) * 0.05;
    return dtype === 'bf16' ? packBf16(v) : v;
  }, name);
  const y = gpu.storage(M * N * 4);
  const prog = new Program(gpu);
  const owned = gpu.collect(() => recordMatmul(prog, { x, w, y, M, label: name }));
  const ms = await timeProgram(gpu, prog, reps);
  for (const b of [...owned, x, y, ...w.parts.map((p) => p.buffer)]) gpu.release(b);
  return { name, dtype, M, N, K, ms: round(ms, 4), tflops: significant((2 * M * N * K) / (ms / 1e3) / 1e12, 4) };
}

async function attentionCases(gpu: Gpu, T: number, nHeads: number, nKv: number, headDim: number, reps: number): Promise<AttentionCase[]> {
  const qDim = nHeads * headDim;
  const kvDim = nKv * headDim;
  const bufs: GPUBuffer[] = [];
  const rnd = (n: number, seed: number) => { const b = randomBuffer(gpu, n, seed); bufs.push(b); return b; };
  const zero = (bytes: number) => { const b = gpu.storage(bytes); bufs.push(b); return b; };
  const q = rnd(T * qDim, 1), k = rnd(T * kvDim, 2), v = rnd(T * kvDim, 3), dOut = rnd(T * qDim, 4);
  const out = zero(T * qDim * 4), lse = zero(T * nHeads * 4), seg = zero(T * 4);
  const dq = zero(T * qDim * 4), dk = zero(T * kvDim * 4), dv = zero(T * kvDim * 4);
  const shape = { B: 1, nHeads, nKv, headDim };
  const fwd = new Program(gpu);
  bufs.push(...gpu.collect(() => recordAttention(fwd, { ...shape, q, k, v, out, lse, segQ: seg, segK: seg, Tq: T, Tk: T, qStart: 0 })));
  const bwd = new Program(gpu);
  bufs.push(...gpu.collect(() => recordAttentionBackward(bwd, { ...shape, q, k, v, out, dOut, lse, segQ: seg, segK: seg, dq, dk, dv, T })));
  const fwdMs = await timeProgram(gpu, fwd, reps);
  const bwdMs = await timeProgram(gpu, bwd, reps);
  for (const b of bufs) gpu.release(b);
  const fwdFlops = 2 * T * T * headDim * nHeads;
  const common = { T, heads: nHeads, kv_heads: nKv, head_dim: headDim };
  return [
    { pass: 'forward', ...common, ms: round(fwdMs, 4), tflops: significant(fwdFlops / (fwdMs / 1e3) / 1e12, 4) },
    { pass: 'backward', ...common, ms: round(bwdMs, 4), tflops: significant((2.5 * fwdFlops) / (bwdMs / 1e3) / 1e12, 4) },
  ];
}

export async function benchmarkKernels(o: KernelBenchOptions): Promise<KernelBenchResult> {
  const c = benchConfig(o.size);
  const gpu = o.gpu ?? (await createGpu({ timestamps: true }));
  try {
    const matmul: MatmulCase[] = [];
    for (const dtype of ['f32', 'bf16'] as const) {
      for (const p of PROJECTIONS) {
        const [inDim, outDim] = projectionDims(c, p);
        matmul.push(await matmulCase(gpu, p, dtype, o.tokens, outDim, inDim, o.reps));
      }
      matmul.push(await matmulCase(gpu, `square`, dtype, o.square, o.square, o.square, o.reps));
    }
    const attention = await attentionCases(gpu, o.attnSeq, c.numHeads, c.numKvHeads, c.headDim, o.reps);
    return {
      bench: 'kernels',
      impl: 'loraforge',
      size: o.size,
      reps: o.reps,
      timing: gpu.features.timestamps ? 'gpu-timestamps' : 'wall-clock',
      matmul,
      attention,
      device: deviceInfo(gpu),
      ...runInfo(),
    };
  } finally {
    if (!o.gpu) await gpu.destroy();
  }
}
