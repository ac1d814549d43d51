// The fused projection case of the matmul and tile-variant tests: y = residual + x·Wᵀ + s·t·Bᵀ and
// dx = dy·W + dT·A recorded on one weight matrix (optionally a row range of it), with both references.
import type { Gpu } from '../src/gpu/device.js';
import type { GpuMatrix } from '../src/gpu/matrix.js';
import type { Program } from '../src/gpu/program.js';
import { matmulInputGradRef, recordMatmulInputGrad } from '../src/kernels/matmul-input-grad.js';
import { matmulRef, recordMatmul } from '../src/kernels/matmul.js';
import { randArray } from './helpers.js';

/** Seeded host operands; W's own values are the caller's. */
export interface FusedProjection {
  M: number;
  K: number;
  r: number;
  scale: number;
  /** W rows [r0, r1) used, or all of them: y, residual and dy then have r1 - r0 columns. */
  rowRange?: [number, number];
  /** Columns of y (the W rows used). */
  width: number;
  x: Float32Array;
  t: Float32Array;
  /** [W rows, r]: all of B, whose rows follow W's. */
  B: Float32Array;
  residual: Float32Array;
  dy: Float32Array;
  dT: Float32Array;
  A: Float32Array;
}

export function fusedProjection(o: { M: number; wRows: number; K: number; r: number; scale: number; seed: number; rowRange?: [number, number] }): FusedProjection {
  const { M, K, r, seed } = o;
  const width = o.rowRange ? o.rowRange[1] - o.rowRange[0] : o.wRows;
  return {
    M, K, r, scale: o.scale, rowRange: o.rowRange, width,
    x: randArray(M * K, seed),
    t: randArray(M * r, seed + 1),
    B: randArray(o.wRows * r, seed + 2),
    residual: randArray(M * width, seed + 3),
    dy: randArray(M * width, seed + 4),
    dT: randArray(M * r, seed + 5),
    A: randArray(r * K, seed + 6),
  };
}

/** Record the fused matmul (LoRA and residual) and input gradient (LoRA) on `w`; y [M, width] and dx [M, K]. */
export function recordFusedProjection(gpu: Gpu, prog: Program, w: GpuMatrix, f: FusedProjection): { y: GPUBuffer; dx: GPUBuffer } {
  const y = gpu.storage(f.M * f.width * 4);
  const dx = gpu.storage(f.M * f.K * 4);
  recordMatmul(prog, {
    x: gpu.upload(f.x), w, y, M: f.M, rowRange: f.rowRange,
    lora: { t: gpu.upload(f.t), B: gpu.upload(f.B), r: f.r, scale: f.scale }, residual: gpu.upload(f.residual),
  });
  recordMatmulInputGrad(prog, { dy: gpu.upload(f.dy), w, dx, M: f.M, rowRange: f.rowRange, lora: { dT: gpu.upload(f.dT), A: gpu.upload(f.A), r: f.r } });
  return { y, dx };
}

/** The references, from the values W holds on the GPU (all its rows, [W rows, K]). */
export function fusedProjectionRef(wValues: Float32Array, f: FusedProjection): { y: Float32Array; dx: Float32Array } {
  const [r0, r1] = f.rowRange ?? [0, f.width];
  const w = wValues.subarray(r0 * f.K, r1 * f.K);
  const B = f.B.subarray(r0 * f.r, r1 * f.r);
  return {
    y: matmulRef(f.x, w, f.M, f.width, f.K, { lora: { t: f.t, B, r: f.r, scale: f.scale }, residual: f.residual }),
    dx: matmulInputGradRef(f.dy, w, f.M, f.width, f.K, { dT: f.dT, A: f.A, r: f.r }),
  };
}
