// Weight matmul y[M, N] (+)= x[M, K] · Wᵀ with W a GpuMatrix [N, K] (HF [out, in]) in f32 or bf16: every
// projection of the model and the vocabulary-chunked logits. One register-tiled dispatch per weight part.
import { type GpuMatrix, type MatrixPart, type WeightDType, wgslWeightArray } from '../gpu/matrix.js';
import type { Binding, Program } from '../gpu/program.js';
import { tiledProductWgsl, tiledProductWorkgroups, wgslRowQuad } from './gemm.js';

/** The rows of one weight part that fall inside a global row range [r0, r1). */
export interface PartSlice {
  part: MatrixPart;
  /** First used row, counted inside the part. */
  rowInPart: number;
  /** Position of that row relative to r0 (the column of y, or of dy). */
  offset: number;
  rows: number;
}

/** The parts of `w` that hold rows of [r0, r1), each with the slice it contributes. */
export function partSlices(w: GpuMatrix, r0: number, r1: number): PartSlice[] {
  if (!(0 <= r0 && r0 < r1 && r1 <= w.rows)) throw new Error(`row range [${r0}, ${r1}) is empty or outside a matrix of ${w.rows} rows`);
  const slices: PartSlice[] = [];
  for (const part of w.parts) {
    const lo = Math.max(r0, part.rowStart);
    const hi = Math.min(r1, part.rowStart + part.rows);
    if (lo < hi) slices.push({ part, rowInPart: lo - part.rowStart, offset: lo - r0, rows: hi - lo });
  }
  return slices;
}

const matmulWgsl = (dtype: WeightDType): string =>
  tiledProductWgsl({
    // A = x (contiguous along k), B = W rows (contiguous along k).
    aRun: 'k',
    bRun: 'k',
    declarations: `
struct Params { M: u32, N: u32, K: u32, wRow: u32, yCol: u32, yStride: u32, accumulate: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: ${wgslWeightArray(dtype)};
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${wgslRowQuad('loadA4', 'x', 'f32', { rows: 'p.M', cols: 'p.K', stride: 'p.K', base: '0u' })}
${wgslRowQuad('loadB4', 'w', dtype, { rows: 'p.N', cols: 'p.K', stride: 'p.K', base: 'p.wRow * p.K' })}
fn storeC(m: u32, n: u32, v: f32) {
  let i = m * p.yStride + p.yCol + n;
  if (p.accumulate != 0u) { y[i] += v; } else { y[i] = v; }
}`,
  });

export interface MatmulArgs {
  x: Binding;
  w: GpuMatrix;
  y: Binding;
  M: number;
  accumulate?: boolean;
  /** Use only W rows [r0, r1); y then has r1 - r0 columns. */
  rowRange?: [number, number];
  label?: string;
}

export function recordMatmul(prog: Program, a: MatmulArgs): void {
  const K = a.w.cols;
  const [r0, r1] = a.rowRange ?? [0, a.w.rows];
  if (a.M === 0) return;
  const code = matmulWgsl(a.w.dtype);
  const label = a.label ?? 'matmul';
  for (const s of partSlices(a.w, r0, r1)) {
    const params = prog.gpu.uniform([
      ['u32', a.M], ['u32', s.rows], ['u32', K], ['u32', s.rowInPart], ['u32', s.offset], ['u32', r1 - r0],
      ['u32', a.accumulate ? 1 : 0],
    ]);
    prog.add(`${label}[${s.part.rowStart + s.rowInPart}]`, code, [a.x, s.part.buffer, a.y, params], tiledProductWorkgroups(a.M, s.rows));
  }
}

/** Plain-TS reference: x [M, K], w [N, K] -> x · wᵀ [M, N]. */
export function matmulRef(x: Float32Array, w: Float32Array, M: number, N: number, K: number): Float32Array {
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k]! * w[n * K + k]!;
      y[m * N + n] = s;
    }
  }
  return y;
}
