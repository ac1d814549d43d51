// Input gradient of the weight matmul (matmul.ts): dx[M, K] (+)= dy[M, N] · W[N, K], W a GpuMatrix in f32, bf16,
// f16 or a ggml block format, and optionally a LoRA path's share dT[M, r] · A[r, K] in the same pass:
//   dx[m, k] = (dx[m, k] | 0) + Σ_n dy[m, n] · W[n, k] + Σ_j dT[m, j] · A[j, k]
// one reduction over [dy | dT] and [W; A], the LoRA part appended at loraK0.
// The reduction runs over W's rows, so each weight part adds its share: the first part writes (or accumulates,
// as asked) and carries the LoRA term, later parts accumulate onto it.
import { matrixRowBytes, type GpuMatrix, type MatrixDType } from '../gpu/matrix.js';
import { kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';
import { appendedReductionLoaders, appendedReductionStart, quadAligned, tiledProductWgsl, tiledProductWorkgroups, wgslQuadArray, wgslRowQuad, type TileConfig } from './tiled-product.js';
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

const PARAMS = uniform({
  /** dy and dx rows (tokens). */
  tokens: 'u32',
  /** W columns = dx columns: the tiled product's output columns. */
  inputs: 'u32',
  /** W rows in this part slice: the reduction. */
  sliceRows: 'u32',
  /** The slice's first row inside its weight part. */
  wRowInPart: 'u32',
  /** The dy column of that row, and dy's row length. */
  dyCol: 'u32',
  dyStride: 'u32',
  accumulate: 'u32',
  /** Where the LoRA term starts in the reduction (sliceRows rounded up to the staged depth), and its end. */
  loraK0: 'u32',
  depth: 'u32',
  r: 'u32',
});

function inputGradLayout(v: InputGradVariant) {
  return kernelLayout({
    dy: storage(wgslQuadArray('f32', v.vecDy)),
    w: storage(wgslQuadArray(v.dtype, v.vecK)),
    dx: output(),
    p: PARAMS,
    dT: v.lora ? storage(wgslQuadArray('f32', v.vecR)) : undefined,
    loraA: v.lora ? storage(wgslQuadArray('f32', v.vecK)) : undefined,
  });
}

// In the tiled product's terms: output (m, n) = dx[token, W column], reduction k = W row within the part slice,
// then (from p.loraK0, the slice length rounded up to the staged depth) the r LoRA components.
function matmulInputGradWgsl(v: InputGradVariant): string {
  // A = dy (contiguous along its columns, the reduction), B(n, k) = W[k, n] (contiguous along n).
  const quadDy = wgslRowQuad('quadDy', 'dy', 'f32', { rows: 'p.tokens', cols: 'p.sliceRows', stride: 'p.dyStride', base: 'p.dyCol' }, v.vecDy);
  const quadW = wgslRowQuad('quadW', 'w', v.dtype, { rows: 'p.sliceRows', cols: 'p.inputs', stride: 'p.inputs', base: 'p.wRowInPart * p.inputs' }, v.vecK);
  const loraQuads = v.lora
    ? `${wgslRowQuad('quadDT', 'dT', 'f32', { rows: 'p.tokens', cols: 'p.r', stride: 'p.r', base: '0u' }, v.vecR)}
${wgslRowQuad('quadA', 'loraA', 'f32', { rows: 'p.r', cols: 'p.inputs', stride: 'p.inputs', base: '0u' }, v.vecK)}`
    : '';
  // Below the slice's W rows the reduction is dy·W alone: interior tiles read both without masks.
  const loaders = appendedReductionLoaders(
    { a: (s) => `quadDy${s}(m, k)`, b: (s) => `quadW${s}(k, n)` },
    v.lora ? { a: 'quadDT(m, k - p.loraK0)', b: 'quadA(k - p.loraK0, n)' } : undefined,
  );
  return tiledProductWgsl({
    aRun: 'k',
    bRun: 'n',
    rows: 'p.tokens',
    cols: 'p.inputs',
    depth: 'p.depth',
    fastDepth: 'p.sliceRows',
    tile: v.tile,
    declarations: `
${inputGradLayout(v).wgsl}
${quadDy}
${quadW}
${loraQuads}
${loaders}
fn storeC(m: u32, n: u32, v: f32) {
  let i = m * p.inputs + n;
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
}

export function recordMatmulInputGrad(prog: Program, a: MatmulInputGradArgs, label = 'matmul-input-grad'): void {
  const K = a.w.cols;
  const [r0, r1] = a.rowRange ?? [0, a.w.rows];
  if (a.M === 0) return;
  partSlices(a.w, r0, r1).forEach((s, i) => {
    const lora = i === 0 ? a.lora : undefined;
    const r = lora?.r ?? 0;
    const loraK0 = lora ? appendedReductionStart(s.rows) : s.rows;
    const tile = chooseTile(prog.gpu, 'matmul-input-grad', a.M, K, s.rows, a.w.dtype);
    const variant: InputGradVariant = {
      dtype: a.w.dtype,
      vecDy: quadAligned(s.offset, r1 - r0),
      vecK: quadAligned(K),
      lora: !!lora,
      vecR: quadAligned(r),
      tile,
    };
    const accumulate = i > 0 || a.accumulate;
    const p = {
      tokens: a.M, inputs: K, sliceRows: s.rows, wRowInPart: s.rowInPart, dyCol: s.offset, dyStride: r1 - r0,
      accumulate: accumulate ? 1 : 0, loraK0, depth: loraK0 + r, r,
    };
    const cost = {
      flops: 2 * a.M * K * (s.rows + r),
      bytes: 4 * a.M * s.rows + s.rows * matrixRowBytes(K, a.w.dtype) + 4 * a.M * K * (accumulate ? 2 : 1) + 4 * (a.M + K) * r,
    };
    inputGradLayout(variant).dispatch(prog, `${label}[${s.part.rowStart + s.rowInPart}]`, matmulInputGradWgsl(variant), {
      dy: a.dy, w: s.part.buffer, dx: a.dx, p, dT: lora?.dT, loraA: lora?.A,
    }, tiledProductWorkgroups(tile, a.M, K), cost);
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
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dy[m * N + n]! * w[n * K + k]!;
      for (let j = 0; j < (lora?.r ?? 0); j++) s += lora!.dT[m * lora!.r + j]! * lora!.A[j * K + k]!;
      dx[m * K + k] = s;
    }
  }
  return dx;
}
