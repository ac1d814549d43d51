// Kernel benchmark: weight-matmul TFLOP/s (f32 and bf16 weights) at a model's projection shapes and at one
// square shape, and causal attention forward/backward at the model's head layout.
import { createGpu, type Gpu } from '../src/gpu/device.js';
import { packBf16 } from '../src/gpu/dtype.js';
import { uploadMatrix, type WeightDType } from '../src/gpu/matrix.js';
import { Program, storageRanges } from '../src/gpu/program.js';
import { recordMatmul } from '../src/kernels/matmul.js';
import { recordMatmulInputGrad } from '../src/kernels/matmul-input-grad.js';
import { recordGemm } from '../src/kernels/gemm.js';
import { recordLoraDown } from '../src/kernels/lora-down.js';
import { loraLayerPartials, recordLoraBackward, recordLoraGradSum } from '../src/kernels/lora-backward.js';
import { chooseTile, forceTile, matrixProduct, setMatrixProduct, type TileChoice } from '../src/kernels/tuning.js';
import { selfCheckMatrixProduct, tileVariants, type MatrixVerdict } from '../src/kernels/tune.js';
import { subgroupMatrixProduct } from '../src/kernels/subgroup-matrix.js';
import { tileName } from '../src/kernels/tiled-product.js';
import { recordAttention } from '../src/kernels/attention.js';
import { recordAttentionBackward } from '../src/kernels/attention-backward.js';
import { PROJECTIONS } from '../src/model/family.js';
import { projectionDims } from '../src/model/families.js';
import { seededRandom } from '../src/random.js';
import { deviceInfo, runInfo, type DeviceInfo } from './env.js';
import { benchConfig } from './model.js';
import { dispatchTimes, programCost, rates, round } from './profile.js';

export interface KernelBenchOptions {
  size: string;
  /** M of the projection matmuls (tokens per step). */
  tokens: number;
  /** Side of the square matmul. */
  square: number;
  /** Sequence length of the attention cases (one batch row). */
  attnSeq: number;
  reps: number;
  /** Also time every tile variant at the q_proj shape (f32 weights), in the same run. */
  variants?: boolean;
  gpu?: Gpu;
}

/** What one timed kernel did: GPU time, its launcher's FLOPs and bytes, and the rates they give. */
export interface KernelRates {
  ms: number;
  flops: number;
  bytes: number;
  tflops: number | null;
  gbps: number | null;
}

export interface MatmulCase extends KernelRates {
  name: string;
  dtype: WeightDType;
  M: number;
  N: number;
  K: number;
  /** The tile variant the product ran with (tuned choice or the rule). */
  tile: string;
}

/** A LoRA factor product at the model's shapes (rank r, all tokens). */
export interface LoraCase extends KernelRates {
  name: string;
  M: number;
  N: number;
  K: number;
  dispatches: number;
}

/** One tile variant of the forward matmul at the q_proj shape. */
export interface VariantCase extends KernelRates {
  tile: string;
  f16: boolean;
}

export interface AttentionCase {
  pass: 'forward' | 'backward';
  T: number;
  heads: number;
  kv_heads: number;
  head_dim: number;
  ms: number;
  flops: number;
  bytes: number;
  gbps: number | null;
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
  /** The input gradients of the same projections (bf16 weights). */
  matmul_input_grad: MatmulCase[];
  lora: LoraCase[];
  variants: VariantCase[];
  /** Self-checks of the adapter's f16 subgroup-matrix products, and the matmuls on the first that passed. */
  matrix_checks: MatrixVerdict[];
  matrix: MatmulCase[];
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

/** Time `record` (run once untimed first) and count what its dispatches do. */
async function timedCase(gpu: Gpu, reps: number, record: (prog: Program) => void): Promise<KernelRates & { dispatches: number }> {
  const prog = new Program(gpu);
  const owned = gpu.collect(() => record(prog));
  const ms = await timeProgram(gpu, prog, reps);
  for (const b of owned) gpu.release(b);
  const cost = programCost([prog]);
  return { ms: round(ms, 4), flops: cost.flops, bytes: cost.bytes, ...rates(cost, ms), dispatches: cost.dispatches };
}

async function matmulCase(gpu: Gpu, name: string, dtype: WeightDType, M: number, N: number, K: number, reps: number, inputGrad = false, variant?: TileChoice): Promise<MatmulCase> {
  const rand = seededRandom(N * 31 + K);
  const x = randomBuffer(gpu, M * K, M + K);
  const w = uploadMatrix(gpu, N, K, dtype, (_s, count) => {
    const v = new Float32Array(count * K);
    for (let i = 0; i < v.length; i++) v[i] = (rand() * 2 - 1) * 0.05;
    return dtype === 'bf16' ? packBf16(v) : v;
  }, name);
  const y = randomBuffer(gpu, M * N, M + N);
  forceTile(gpu, variant);
  try {
    const tile = !inputGrad && matrixProduct(gpu) ? matrixProduct(gpu)!.name : tileName(inputGrad ? chooseTile(gpu, 'matmul-input-grad', M, K, N, dtype) : chooseTile(gpu, 'matmul', M, N, K, dtype));
    const r = await timedCase(gpu, reps, (prog) => inputGrad
      ? recordMatmulInputGrad(prog, { dy: y, w, dx: x, M }, name)
      : recordMatmul(prog, { x, w, y, M }, name));
    const { dispatches: _, ...rest } = r;
    return { name, dtype, M, N, K, tile, ...rest };
  } finally {
    forceTile(gpu, undefined);
    for (const b of [x, y, ...w.parts.map((p) => p.buffer)]) gpu.release(b);
  }
}

/** The LoRA factor products of a layer's q/k/v group at rank r over `tokens` tokens (f32): the fused
 * down-projection beside q's alone, and q's gradient products: as the three split GEMMs (the fallback) and as the
 * training step makes them (lora-backward's one dispatch plus the per-layer sum, here over q's gradients alone). */
async function loraCases(gpu: Gpu, tokens: number, hidden: number, qOut: number, r: number, reps: number): Promise<LoraCase[]> {
  const bufs: GPUBuffer[] = [];
  const rnd = (n: number, seed: number) => { const b = randomBuffer(gpu, n, seed); bufs.push(b); return b; };
  const x = rnd(tokens * hidden, 1);
  const As = [rnd(r * hidden, 2), rnd(r * hidden, 3), rnd(r * hidden, 4)];
  const ts = [rnd(tokens * r, 5), rnd(tokens * r, 6), rnd(tokens * r, 7)];
  const dy = rnd(tokens * qOut, 8);
  const B = rnd(qOut * r, 9);
  const dB = rnd(qOut * r, 10);
  const dA = rnd(r * hidden, 11);
  const grads = storageRanges(gpu, [r * hidden * 4, qOut * r * 4], 'q dA | dB');
  bufs.push(grads[0]!.buffer);
  const cases: { name: string; M: number; N: number; K: number; record: (p: Program) => void }[] = [
    { name: 'x·Aᵀ for q, k, v (fused)', M: tokens, N: 3 * r, K: hidden, record: (p) => recordLoraDown(p, { x, factors: As.map((A, j) => ({ A, t: ts[j]! })), M: tokens, K: hidden, r }) },
    { name: 'x·Aᵀ for q alone', M: tokens, N: r, K: hidden, record: (p) => recordGemm(p, { a: x, b: As[0]!, c: ts[0]!, M: tokens, N: r, K: hidden, transB: true }) },
    { name: 'dT = s·dy·B (q)', M: tokens, N: r, K: qOut, record: (p) => recordGemm(p, { a: dy, b: B, c: ts[1]!, M: tokens, N: r, K: qOut, alpha: 2 }) },
    { name: 'dB += s·dyᵀ·t (q)', M: qOut, N: r, K: tokens, record: (p) => recordGemm(p, { a: dy, b: ts[0]!, c: dB, M: qOut, N: r, K: tokens, transA: true, alpha: 2, beta: 1 }) },
    { name: 'dA += dTᵀ·x (q)', M: r, N: hidden, K: tokens, record: (p) => recordGemm(p, { a: ts[1]!, b: x, c: dA, M: r, N: hidden, K: tokens, transA: true, beta: 1 }) },
    {
      name: 'dT, dB, dA in one pass + sum (q)', M: tokens, N: r, K: 2 * qOut + hidden,
      record: (p) => {
        const partials = loraLayerPartials(p, grads, tokens, r);
        if (!partials) throw new Error(`lora-backward has no plan for ${tokens} tokens at rank ${r}`);
        recordLoraBackward(p, { dy, t: ts[0]!, B, x, dT: ts[1]!, partials, dA: grads[0]!, dB: grads[1]!, N: tokens, outDim: qOut, inDim: hidden, r, scale: 2 });
        recordLoraGradSum(p, partials);
      },
    },
  ];
  const out: LoraCase[] = [];
  for (const c of cases) out.push({ name: c.name, M: c.M, N: c.N, K: c.K, ...(await timedCase(gpu, reps, c.record)) });
  for (const b of bufs) gpu.release(b);
  return out;
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
  // Bytes: q, k, v and the output (forward); those, dOut and the three gradients (backward), each once.
  const fwdBytes = 4 * T * (2 * qDim + 2 * kvDim);
  const bwdBytes = 4 * T * (4 * qDim + 4 * kvDim);
  const rate = (flops: number, bytes: number, ms: number) => ({ ms: round(ms, 4), flops, bytes, tflops: rates({ flops, bytes }, ms).tflops ?? 0, gbps: rates({ flops, bytes }, ms).gbps });
  return [
    { pass: 'forward', ...common, ...rate(fwdFlops, fwdBytes, fwdMs) },
    { pass: 'backward', ...common, ...rate(2.5 * fwdFlops, bwdBytes, bwdMs) },
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
    const matmulInputGrad: MatmulCase[] = [];
    for (const p of PROJECTIONS) {
      const [inDim, outDim] = projectionDims(c, p);
      matmulInputGrad.push(await matmulCase(gpu, `${p}.dx`, 'bf16', o.tokens, outDim, inDim, o.reps, true));
    }
    const [hidden, qOut] = projectionDims(c, 'q_proj');
    const lora = await loraCases(gpu, o.tokens, hidden, qOut, 8, o.reps);
    const variants: VariantCase[] = [];
    if (o.variants) {
      for (const v of tileVariants(gpu)) {
        const m = await matmulCase(gpu, 'q_proj', 'f32', o.tokens, qOut, hidden, o.reps, false, v);
        variants.push({ tile: v.tile, f16: v.f16, ms: m.ms, flops: m.flops, bytes: m.bytes, tflops: m.tflops, gbps: m.gbps });
      }
    }
    const matrixChecks: MatrixVerdict[] = [];
    const matrix: MatmulCase[] = [];
    for (const cfg of gpu.features.subgroupMatrix) {
      const product = subgroupMatrixProduct(cfg, gpu.features.subgroupMaxSize);
      const check = await selfCheckMatrixProduct(gpu, product);
      matrixChecks.push({ product: product.name, ...check });
      if (!check.ok) continue;
      setMatrixProduct(gpu, product);
      try {
        for (const p of PROJECTIONS) {
          const [inDim, outDim] = projectionDims(c, p);
          matrix.push(await matmulCase(gpu, p, 'bf16', o.tokens, outDim, inDim, o.reps));
        }
        matrix.push(await matmulCase(gpu, 'square', 'bf16', o.square, o.square, o.square, o.reps));
      } finally {
        setMatrixProduct(gpu, undefined);
      }
      break;
    }
    const attention = await attentionCases(gpu, o.attnSeq, c.numHeads, c.numKvHeads, c.headDim, o.reps);
    return {
      bench: 'kernels',
      impl: 'loraforge',
      size: o.size,
      reps: o.reps,
      timing: gpu.features.timestamps ? 'gpu-timestamps' : 'wall-clock',
      matmul,
      matmul_input_grad: matmulInputGrad,
      lora,
      variants,
      matrix_checks: matrixChecks,
      matrix,
      attention,
      device: deviceInfo(gpu),
      ...runInfo(),
    };
  } finally {
    if (!o.gpu) await gpu.destroy();
  }
}
