// AdamW as torch.optim.AdamW computes it, on the GPU for every LoRA tensor in one recorded program (one update
// dispatch per flat buffer of parameters, however many tensors it holds), with
// clip_grad_norm_'s global-norm clipping and a NaN/Inf guard: a step whose gradient norm is not finite is
// skipped on the GPU (parameters and moments untouched) and counted there, so a step never reads back.
import type { Gpu } from '../gpu/device.js';
import { entryWgsl, kernelLayout, output, storage, uniform, uniformBuffer, writeUniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';
import { recordGradSumSquares } from './grad-norm.js';

const WG = 256;

export interface AdamWHyper {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global gradient-norm clip threshold; <= 0 disables clipping. */
  maxGradNorm: number;
}

/** Parameters updated by one dispatch: `count` f32 of `param` and of its gradient `grad`. */
export interface AdamWBuffer {
  param: Binding;
  grad: Binding;
  count: number;
}

/** A tensor of the saved state (AdamWState's m and v): `count` values from element `offset` of buffer `buffer`. */
export interface AdamWTensor {
  buffer: number;
  offset: number;
  count: number;
}

export interface AdamWStats {
  /** Total gradient norm of the last step, before clipping (NaN or Infinity when that step was skipped). */
  gradNorm: number;
  /** The factor the last step's gradients were multiplied by (1 when the norm was within maxGradNorm). */
  clipScale: number;
  skippedSteps: number;
  consecutiveBad: number;
}

export interface AdamWState {
  /** Per tensor (the constructor's `tensors`, in order). */
  m: Float32Array[];
  v: Float32Array[];
  /** The 1-based step t of the last update (0 before the first). */
  step: number;
  /** The guard's counters, so that a resumed run keeps counting (absent in older checkpoints: 0). */
  skippedSteps?: number;
  consecutiveBad?: number;
}

// Written by the guard, read by every update. Field order is the byte layout readStats decodes.
const statsStruct = /* wgsl */ `
struct Stats { norm: f32, scale: f32, skip: u32, skippedSteps: u32, consecutiveBad: u32 }`;
const STATS_BYTES = 20;

const guardLayout = kernelLayout({ sumSq: storage(), stats: output('Stats'), p: uniform({ maxNorm: 'f32' }) });

const guardWgsl = /* wgsl */ `${statsStruct}
${guardLayout.wgsl}

${entryWgsl(1)} {
  let ss = sumSq[0];
  let norm = sqrt(ss);
  stats.norm = norm;
  // An exponent test on the bits, not x != x: shader compilers may assume floats are never NaN.
  if ((bitcast<u32>(ss) & 0x7f800000u) == 0x7f800000u) {
    stats.skip = 1u;
    stats.skippedSteps += 1u;
    stats.consecutiveBad += 1u;
    return;
  }
  stats.skip = 0u;
  stats.consecutiveBad = 0u;
  let coef = p.maxNorm / (norm + 1e-6);
  stats.scale = select(1.0, coef, p.maxNorm > 0.0 && coef < 1.0);
}`;

/** Values of one optimizer step, shared by every tensor's update (rewritten before each step). */
const stepUniform = uniform(
  { decay: 'f32', stepSize: 'f32', bc2Sqrt: 'f32', eps: 'f32', lerpWeight: 'f32', beta2: 'f32', oneMinusBeta2: 'f32' },
  'Step',
);
type StepValues = Record<keyof typeof stepUniform.fields, number>;

const updateLayout = kernelLayout({
  param: output(),
  grad: storage(),
  m: output(),
  v: output(),
  stats: storage('Stats'),
  s: stepUniform,
  t: uniform({ count: 'u32' }, 'Tensor'),
});

// Same operation order as torch's single-tensor AdamW: decay, lerp for m, mul + addcmul for v, addcdiv.
const updateWgsl = /* wgsl */ `${statsStruct}
${updateLayout.wgsl}

${entryWgsl(WG)} {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= t.count || stats.skip != 0u) { return; }
  let g = grad[i] * stats.scale;
  let p0 = param[i] * s.decay;
  let m0 = m[i];
  // torch.lerp switches form at weight 0.5 to stay exact at the ends.
  let m1 = select(g - (g - m0) * (1.0 - s.lerpWeight), m0 + s.lerpWeight * (g - m0), s.lerpWeight < 0.5);
  let v1 = v[i] * s.beta2 + s.oneMinusBeta2 * g * g;
  let denom = sqrt(v1) / s.bc2Sqrt + s.eps;
  param[i] = p0 - s.stepSize * m1 / denom;
  m[i] = m1;
  v[i] = v1;
}`;

export class AdamW {
  private readonly m: GPUBuffer[];
  private readonly v: GPUBuffer[];
  private readonly sumSq: GPUBuffer;
  private readonly stats: GPUBuffer;
  private readonly stepParams: GPUBuffer;
  private step = 0;

  constructor(
    private readonly gpu: Gpu,
    /** The moments are laid out as these: elements between tensors (gradient 0) stay 0. */
    private readonly buffers: AdamWBuffer[],
    private readonly hp: AdamWHyper,
    /** What state() and loadState() exchange; default one tensor per buffer. */
    private readonly tensors: AdamWTensor[] = buffers.map((b, i) => ({ buffer: i, offset: 0, count: b.count })),
  ) {
    this.m = buffers.map((b, i) => gpu.storage(b.count * 4, `adamw.m${i}`));
    this.v = buffers.map((b, i) => gpu.storage(b.count * 4, `adamw.v${i}`));
    this.sumSq = gpu.storage(4, 'adamw.sumsq');
    this.stats = gpu.storage(STATS_BYTES, 'adamw.stats');
    this.stepParams = uniformBuffer(gpu, stepUniform, this.stepValues(1, 0), 'adamw.step');
  }

  /** Append the gradient norm, the guard and the update of every buffer. */
  record(prog: Program): void {
    recordGradSumSquares(prog, { grads: this.buffers.map((b) => ({ buffer: b.grad, count: b.count })), out: this.sumSq }, 'adamw.sumsq');
    guardLayout.dispatch(prog, 'adamw.guard', guardWgsl, { sumSq: this.sumSq, stats: this.stats, p: { maxNorm: this.hp.maxGradNorm } }, 1, { flops: 4, bytes: 4 + 2 * STATS_BYTES });
    this.buffers.forEach((b, i) => {
      if (b.count === 0) return;
      const bindings = { param: b.param, grad: b.grad, m: this.m[i]!, v: this.v[i]!, stats: this.stats, s: this.stepParams, t: { count: b.count } };
      // Per element: 13 arithmetic operations and a square root; param, grad, m, v read, param, m, v written.
      updateLayout.dispatch(prog, 'adamw.update', updateWgsl, bindings, Math.ceil(b.count / WG), { flops: 14 * b.count, bytes: 28 * b.count });
    });
  }

  /** Set the 1-based step t and its learning rate for the next run of the recorded program. */
  setStep(step: number, lr: number): void {
    if (!Number.isInteger(step) || step < 1) throw new Error(`AdamW step must be an integer >= 1, got ${step}`);
    writeUniform(this.gpu, this.stepParams, stepUniform, this.stepValues(step, lr));
    this.step = step;
  }

  /** Per-step values computed in f64 as torch does on the CPU, then stored as f32. */
  private stepValues(step: number, lr: number): StepValues {
    const { beta1, beta2, eps, weightDecay } = this.hp;
    const bc1 = 1 - beta1 ** step;
    const bc2 = 1 - beta2 ** step;
    return {
      decay: 1 - lr * weightDecay,
      stepSize: lr / bc1,
      bc2Sqrt: Math.sqrt(bc2),
      eps,
      lerpWeight: 1 - beta1,
      beta2,
      oneMinusBeta2: 1 - beta2,
    };
  }

  async readStats(): Promise<AdamWStats> {
    const d = new DataView(await this.gpu.read(this.stats, STATS_BYTES));
    return { gradNorm: d.getFloat32(0, true), clipScale: d.getFloat32(4, true), skippedSteps: d.getUint32(12, true), consecutiveBad: d.getUint32(16, true) };
  }

  async state(): Promise<AdamWState> {
    const read = async (bufs: GPUBuffer[]) => {
      const host = await Promise.all(bufs.map((b, i) => this.gpu.readF32(b, this.buffers[i]!.count)));
      return this.tensors.map((t) => host[t.buffer]!.slice(t.offset, t.offset + t.count));
    };
    const { skippedSteps, consecutiveBad } = await this.readStats();
    return { m: await read(this.m), v: await read(this.v), step: this.step, skippedSteps, consecutiveBad };
  }

  /** Restore moments, step and the guard's counters from a checkpoint (tensors in the constructor's order). */
  loadState(s: AdamWState): void {
    if (s.m.length !== this.tensors.length || s.v.length !== this.tensors.length) {
      throw new Error(`AdamW state has ${s.m.length} m / ${s.v.length} v tensors, expected ${this.tensors.length}`);
    }
    this.tensors.forEach((t, i) => {
      if (s.m[i]!.length !== t.count || s.v[i]!.length !== t.count) {
        throw new Error(`AdamW state tensor ${i}: ${s.m[i]!.length} m / ${s.v[i]!.length} v values, expected ${t.count}`);
      }
      this.gpu.write(this.m[t.buffer]!, s.m[i]!, t.offset * 4);
      this.gpu.write(this.v[t.buffer]!, s.v[i]!, t.offset * 4);
    });
    this.step = s.step;
    const counters = new DataView(new ArrayBuffer(STATS_BYTES));
    counters.setUint32(12, s.skippedSteps ?? 0, true);
    counters.setUint32(16, s.consecutiveBad ?? 0, true);
    this.gpu.write(this.stats, counters);
  }

  destroy(): void {
    for (const b of [...this.m, ...this.v, this.sumSq, this.stats, this.stepParams]) this.gpu.release(b);
  }
}

export interface AdamWRefState {
  params: Float32Array[];
  m: Float32Array[];
  v: Float32Array[];
}

/** Plain-TS reference of one step (f64 arithmetic, f32 storage), updating `s` in place unless the step is skipped. */
export function adamwRef(s: AdamWRefState, grads: Float32Array[], hp: AdamWHyper, step: number, lr: number): { gradNorm: number; skipped: boolean } {
  let ss = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) ss += g[i]! ** 2;
  const gradNorm = Math.sqrt(ss);
  if (!Number.isFinite(gradNorm)) return { gradNorm, skipped: true };
  const coef = hp.maxGradNorm / (gradNorm + 1e-6);
  const scale = hp.maxGradNorm > 0 && coef < 1 ? coef : 1;
  const bc1 = 1 - hp.beta1 ** step;
  const bc2 = 1 - hp.beta2 ** step;
  grads.forEach((grad, k) => {
    const p = s.params[k]!, m = s.m[k]!, v = s.v[k]!;
    for (let i = 0; i < grad.length; i++) {
      const g = grad[i]! * scale;
      m[i] = hp.beta1 * m[i]! + (1 - hp.beta1) * g;
      v[i] = hp.beta2 * v[i]! + (1 - hp.beta2) * g * g;
      const decayed = p[i]! * (1 - lr * hp.weightDecay);
      p[i] = decayed - (lr / bc1) * m[i]! / (Math.sqrt(v[i]!) / Math.sqrt(bc2) + hp.eps);
    }
  });
  return { gradNorm, skipped: false };
}
