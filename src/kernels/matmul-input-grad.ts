// Input gradient of the weight matmul: dx[M, K] (+)= dy[M, N] · W[N, K], W a GpuMatrix in f32 or bf16.
// The reduction runs over W's rows, so each weight part adds its share: the first part writes (or accumulates,
// as asked), later parts accumulate onto it.
import { type GpuMatrix, type WeightDType, wgslWeightArray } from '../gpu/matrix.js';
import type { Binding, Program } from '../gpu/program.js';
import { tiledProductWgsl, tiledProductWorkgroups, wgslRowQuad } from './gemm.js';
import { partSlices } from './matmul.js';

// In the tiled product's terms: output (m, n) = dx[token, W column], reduction k = W row within the part slice.
const matmulInputGradWgsl = (dtype: WeightDType): string =>
  tiledProductWgsl({
    // A = dy (contiguous along its columns, the reduction), B(n, k) = W[k, n] (contiguous along n).
    aRun: 'k',
    bRun: 'n',
    declarations: `
struct Params { M: u32, N: u32, K: u32, wRow: u32, dyCol: u32, dyStride: u32, accumulate: u32 }
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> w: ${wgslWeightArray(dtype)};
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${wgslRowQuad('loadA4', 'dy', 'f32', { rows: 'p.M', cols: 'p.K', stride: 'p.dyStride', base: 'p.dyCol' })}
${wgslRowQuad('quadW', 'w', dtype, { rows: 'p.K', cols: 'p.N', stride: 'p.N', base: 'p.wRow * p.N' })}
fn loadB4(n: u32, k: u32) -> vec4<f32> { return quadW(k, n); }
fn storeC(m: u32, n: u32, v: f32) {
  let i = m * p.N + n;
  if (p.accumulate != 0u) { dx[i] += v; } else { dx[i] = v; }
}`,
  });

export interface MatmulInputGradArgs {
  dy: Binding;
  w: GpuMatrix;
  dx: Binding;
  M: number;
  accumulate?: boolean;
  /** Use only W rows [r0, r1); dy then has r1 - r0 columns. */
  rowRange?: [number, number];
  label?: string;
}

export function recordMatmulInputGrad(prog: Program, a: MatmulInputGradArgs): void {
  const K = a.w.cols;
  const [r0, r1] = a.rowRange ?? [0, a.w.rows];
  if (a.M === 0) return;
  const code = matmulInputGradWgsl(a.w.dtype);
  const label = a.label ?? 'matmul-input-grad';
  partSlices(a.w, r0, r1).forEach((s, i) => {
    const params = prog.gpu.uniform([
      ['u32', a.M], ['u32', K], ['u32', s.rows], ['u32', s.rowInPart], ['u32', s.offset], ['u32', r1 - r0],
      ['u32', i > 0 || a.accumulate ? 1 : 0],
    ]);
    prog.add(`${label}[${s.part.rowStart + s.rowInPart}]`, code, [a.dy, s.part.buffer, a.dx, params], tiledProductWorkgroups(a.M, K));
  });
}

/** Plain-TS reference: dy [M, N], w [N, K] -> dy · w [M, K]. */
export function matmulInputGradRef(dy: Float32Array, w: Float32Array, M: number, N: number, K: number): Float32Array {
  const dx = new Float32Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dy[m * N + n]!;
      for (let k = 0; k < K; k++) dx[m * K + k] += g * w[n * K + k]!;
    }
  }
  return dx;
}
