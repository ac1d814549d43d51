// Input gradient of the weight matmul: dx[M, K] (+)= dy[M, N] · W[N, K], W a GpuMatrix in f32 or bf16, and
// optionally a LoRA path's share dT[M, r] · A[r, K] in the same pass.
// The reduction runs over W's rows, so each weight part adds its share: the first part writes (or accumulates,
// as asked) and carries the LoRA term, later parts accumulate onto it.
import { matrixRowBytes, type GpuMatrix, type MatrixDType } from '../gpu/matrix.js';
import type { Binding, Program } from '../gpu/program.js';
import { appendedReductionStart, quadAligned, tiledProductWgsl, tiledProductWorkgroups, wgslQuadArray, wgslRowQuad, type TileConfig } from './tiled-product.js';
import { chooseTile } from './tuning.js';
import { partSlices } from './matmul.js';

/** The LoRA path's input gradient fused into the weight one: dx += dT · A. */
export interface MatmulInputGradLora {
  /** [M, r]: the gradient of t = x · Aᵀ (already scaled). */
  dT: Binding;
  /** [r, K] f32. */
  A: Binding;
  r: number;
}

interface InputGradVariant {
  dtype: MatrixDType;
  /** dy read as aligned vec4s (its column offset and row stride are multiples of 4). */
  vecDy: boolean;
  /** W rows and A rows read as aligned vec4s (K % 4 == 0). */
  vecK: boolean;
  lora: boolean;
  /** dT read as aligned vec4s (r % 4 == 0). */
  vecR: boolean;
  tile: TileConfig;
}

// In the tiled product's terms: output (m, n) = dx[token, W column], reduction k = W row within the part slice,
// then (from p.loraK0, the slice length rounded up to the staged depth) the r LoRA components.
function matmulInputGradWgsl(v: InputGradVariant): string {
  const bindings = [
    `var<storage, read> dy: ${wgslQuadArray('f32', v.vecDy)}`,
    `var<storage, read> w: ${wgslQuadArray(v.dtype, v.vecK)}`,
    'var<storage, read_write> dx: array<f32>',
    'var<uniform> p: Params',
  ];
  if (v.lora) bindings.push(`var<storage, read> dT: ${wgslQuadArray('f32', v.vecR)}`, `var<storage, read> loraA: ${wgslQuadArray('f32', v.vecK)}`);
  // A = dy (contiguous along its columns, the reduction), B(n, k) = W[k, n] (contiguous along n).
  const quadDy = wgslRowQuad('quadDy', 'dy', 'f32', { rows: 'p.M', cols: 'p.K', stride: 'p.dyStride', base: 'p.dyCol' }, v.vecDy);
  const quadW = wgslRowQuad('quadW', 'w', v.dtype, { rows: 'p.K', cols: 'p.N', stride: 'p.N', base: 'p.wRow * p.N' }, v.vecK);
  const loaders = v.lora
    ? `${quadDy}
${quadW}
${wgslRowQuad('quadDT', 'dT', 'f32', { rows: 'p.M', cols: 'p.r', stride: 'p.r', base: '0u' }, v.vecR)}
${wgslRowQuad('quadA', 'loraA', 'f32', { rows: 'p.r', cols: 'p.N', stride: 'p.N', base: '0u' }, v.vecK)}
fn loadA4(m: u32, k: u32) -> vec4<f32> {
  if (k < p.loraK0) { return quadDy(m, k); }
  return quadDT(m, k - p.loraK0);
}
fn loadB4(n: u32, k: u32) -> vec4<f32> {
  if (k < p.loraK0) { return quadW(k, n); }
  return quadA(k - p.loraK0, n);
}`
    : `${quadDy}
${quadW}
fn loadA4(m: u32, k: u32) -> vec4<f32> { return quadDy(m, k); }
fn loadB4(n: u32, k: u32) -> vec4<f32> { return quadW(k, n); }`;
  // Below K (the slice's W rows) the reduction is dy·W alone: interior tiles read both without masks.
  const fast = `fn loadA4Fast(m: u32, k: u32) -> vec4<f32> { return quadDyFast(m, k); }
fn loadB4Fast(n: u32, k: u32) -> vec4<f32> { return quadWFast(k, n); }`;
  return tiledProductWgsl({
    aRun: 'k',
    bRun: 'n',
    depth: 'p.depth',
    fastDepth: 'p.K',
    tile: v.tile,
    declarations: `
struct Params { M: u32, N: u32, K: u32, wRow: u32, dyCol: u32, dyStride: u32, accumulate: u32, loraK0: u32, depth: u32, r: u32 }
${bindings.map((b, i) => `@group(0) @binding(${i}) ${b};`).join('\n')}
${loaders}
${fast}
fn storeC(m: u32, n: u32, v: f32) {
  let i = m * p.N + n;
  if (p.accumulate != 0u) { dx[i] += v; } else { dx[i] = v; }
}`,
  });
}

export interface MatmulInputGradArgs {
  dy: Binding;
  w: GpuMatrix;
  dx: Binding;
  M: number;
  accumulate?: boolean;
  /** Use only W rows [r0, r1); dy then has r1 - r0 columns. */
  rowRange?: [number, number];
  /** Add the LoRA path's dT · A in the same pass. */
  lora?: MatmulInputGradLora;
  label?: string;
}

export function recordMatmulInputGrad(prog: Program, a: MatmulInputGradArgs): void {
  const K = a.w.cols;
  const [r0, r1] = a.rowRange ?? [0, a.w.rows];
  if (a.M === 0) return;
  const label = a.label ?? 'matmul-input-grad';
  partSlices(a.w, r0, r1).forEach((s, i) => {
    const lora = i === 0 ? a.lora : undefined;
    const r = lora?.r ?? 0;
    const loraK0 = lora ? appendedReductionStart(s.rows) : s.rows;
    const tile = chooseTile(prog.gpu, 'matmul-input-grad', a.M, K, s.rows, a.w.dtype);
    const code = matmulInputGradWgsl({
      dtype: a.w.dtype,
      vecDy: quadAligned(s.offset, r1 - r0),
      vecK: quadAligned(K),
      lora: !!lora,
      vecR: quadAligned(r),
      tile,
    });
    const params = prog.gpu.uniform([
      ['u32', a.M], ['u32', K], ['u32', s.rows], ['u32', s.rowInPart], ['u32', s.offset], ['u32', r1 - r0],
      ['u32', i > 0 || a.accumulate ? 1 : 0], ['u32', loraK0], ['u32', loraK0 + r], ['u32', r],
    ]);
    const bindings: Binding[] = [a.dy, s.part.buffer, a.dx, params];
    if (lora) bindings.push(lora.dT, lora.A);
    const cost = {
      flops: 2 * a.M * K * (s.rows + r),
      bytes: 4 * a.M * s.rows + s.rows * matrixRowBytes(K, a.w.dtype) + 4 * a.M * K * (i > 0 || a.accumulate ? 2 : 1) + 4 * (a.M + K) * r,
    };
    prog.add(`${label}[${s.part.rowStart + s.rowInPart}]`, code, bindings, tiledProductWorkgroups(tile, a.M, K), cost);
  });
}

/** Plain-TS reference: dy [M, N], w [N, K] -> dy · w [M, K], plus dT · A (dT [M, r], A [r, K]) with `lora`. */
export function matmulInputGradRef(
  dy: Float32Array,
  w: Float32Array,
  M: number,
  N: number,
  K: number,
  lora?: { dT: Float32Array; A: Float32Array; r: number },
): Float32Array {
  const dx = new Float32Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dy[m * N + n]!;
      for (let k = 0; k < K; k++) dx[m * K + k] += g * w[n * K + k]!;
    }
    for (let j = 0; j < (lora?.r ?? 0); j++) {
      const g = lora!.dT[m * lora!.r + j]!;
      for (let k = 0; k < K; k++) dx[m * K + k] += g * lora!.A[j * K + k]!;
    }
  }
  return dx;
}
