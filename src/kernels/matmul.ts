// Weight matmul y[M, N] (+)= x[M, K] · Wᵀ with W a GpuMatrix [N, K] (HF [out, in]) in f32, bf16, f16 or a ggml
// block format: every projection of the model and the vocabulary-chunked logits. One register-tiled dispatch per
// weight part, which can also add a projection's LoRA path and a residual, so an adapted projection writes y once:
//   y[m, n] = (residual[m, n] | y[m, n] | 0) + Σ_k x[m, k] · W[n, k] + Σ_j (s · t[m, j]) · B[n, j]
// (t = x · Aᵀ [M, r], B [N, r]): one reduction over [x | s·t] and [W | B], the LoRA part appended at loraK0.
import { matrixRowBytes, type GpuMatrix, type MatrixDType, type MatrixPart } from '../gpu/matrix.js';
import { kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';
import { appendedReductionLoaders, appendedReductionStart, quadAligned, tiledProductWgsl, tiledProductWorkgroups, wgslQuadArray, wgslRowQuad, type MatmulLora, type TileConfig } from './tiled-product.js';
import { recordMatrixMatmul } from './subgroup-matrix.js';
import { chooseTile, matrixProduct } from './tuning.js';

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

export type { MatmulLora } from './tiled-product.js';

interface MatmulVariant {
  dtype: MatrixDType;
  /** x and W rows read as aligned vec4s (K % 4 == 0). */
  vecK: boolean;
  lora: boolean;
  /** t and B rows read as aligned vec4s (r % 4 == 0). */
  vecR: boolean;
  residual: boolean;
  tile: TileConfig;
}

const PARAMS = uniform({
  /** x rows (tokens); y rows. */
  M: 'u32',
  /** W rows in this part slice: the y columns this dispatch writes. */
  N: 'u32',
  /** x columns = W columns: the reduction. */
  K: 'u32',
  /** The slice's first row inside its weight part. */
  wRowInPart: 'u32',
  /** The y column that row writes, and y's row length. */
  yCol: 'u32',
  yStride: 'u32',
  accumulate: 'u32',
  /** Where the LoRA term starts in the reduction (K rounded up to the staged depth), and its end. */
  loraK0: 'u32',
  depth: 'u32',
  r: 'u32',
  /** The slice's first row of B (B's rows follow W's whole rows, not its parts). */
  loraBRow: 'u32',
  scale: 'f32',
});

function matmulLayout(v: MatmulVariant) {
  return kernelLayout({
    x: storage(wgslQuadArray('f32', v.vecK)),
    w: storage(wgslQuadArray(v.dtype, v.vecK)),
    y: output(),
    p: PARAMS,
    t: v.lora ? storage(wgslQuadArray('f32', v.vecR)) : undefined,
    loraB: v.lora ? storage(wgslQuadArray('f32', v.vecR)) : undefined,
    residual: v.residual ? storage() : undefined,
  });
}

// The LoRA term extends the reduction: y = [x | s·t] · [W | B]ᵀ, with t and B starting at p.loraK0 (K rounded up
// to the staged depth), so it costs ceil(r / 16) more tile steps and no extra pass over y.
function matmulWgsl(v: MatmulVariant): string {
  const quadX = wgslRowQuad('quadX', 'x', 'f32', { rows: 'p.M', cols: 'p.K', stride: 'p.K', base: '0u' }, v.vecK);
  const quadW = wgslRowQuad('quadW', 'w', v.dtype, { rows: 'p.N', cols: 'p.K', stride: 'p.K', base: 'p.wRowInPart * p.K' }, v.vecK);
  const loraQuads = v.lora
    ? `${wgslRowQuad('quadT', 't', 'f32', { rows: 'p.M', cols: 'p.r', stride: 'p.r', base: '0u' }, v.vecR)}
${wgslRowQuad('quadB', 'loraB', 'f32', { rows: 'p.N', cols: 'p.r', stride: 'p.r', base: 'p.loraBRow * p.r' }, v.vecR)}`
    : '';
  // Below K the reduction is x·Wᵀ alone: interior tiles read x and W without masks.
  const loaders = appendedReductionLoaders(
    { a: (s) => `quadX${s}(m, k)`, b: (s) => `quadW${s}(n, k)` },
    v.lora ? { a: 'p.scale * quadT(m, k - p.loraK0)', b: 'quadB(n, k - p.loraK0)' } : undefined,
  );
  const store = v.residual
    ? 'y[i] = residual[i] + v;'
    : 'if (p.accumulate != 0u) { y[i] += v; } else { y[i] = v; }';
  return tiledProductWgsl({
    // A = x (contiguous along k), B = W rows (contiguous along k).
    aRun: 'k',
    bRun: 'k',
    depth: 'p.depth',
    fastDepth: 'p.K',
    tile: v.tile,
    declarations: `
${matmulLayout(v).wgsl}
${quadX}
${quadW}
${loraQuads}
${loaders}
fn storeC(m: u32, n: u32, v: f32) {
  let i = m * p.yStride + p.yCol + n;
  ${store}
}`,
  });
}

export interface MatmulArgs {
  x: Binding;
  w: GpuMatrix;
  y: Binding;
  M: number;
  accumulate?: boolean;
  /** Use only W rows [r0, r1); y then has r1 - r0 columns. */
  rowRange?: [number, number];
  /** Add the LoRA path scale · t · Bᵀ in the same pass. */
  lora?: MatmulLora;
  /** y = residual + x · Wᵀ (+ LoRA): laid out like y, and a different buffer (not with `accumulate`). */
  residual?: Binding;
}

export function recordMatmul(prog: Program, a: MatmulArgs, label = 'matmul'): void {
  const K = a.w.cols;
  const [r0, r1] = a.rowRange ?? [0, a.w.rows];
  if (a.residual && a.accumulate) throw new Error('recordMatmul: residual and accumulate exclude each other');
  if (a.M === 0) return;
  const r = a.lora?.r ?? 0;
  const loraK0 = a.lora ? appendedReductionStart(K) : K;
  // Whole projections go to the matrix units where a self-checked product is installed and the packed
  // operands fit a binding; vocabulary chunks (row ranges) stay on the tiled kernels.
  const product = matrixProduct(prog.gpu);
  if (product && !a.rowRange && recordMatrixMatmul(prog, product, a, label)) return;
  for (const s of partSlices(a.w, r0, r1)) {
    const tile = chooseTile(prog.gpu, 'matmul', a.M, s.rows, K, a.w.dtype);
    const variant: MatmulVariant = {
      dtype: a.w.dtype,
      vecK: quadAligned(K),
      lora: !!a.lora,
      vecR: quadAligned(r),
      residual: !!a.residual,
      tile,
    };
    const wRow = s.part.rowStart + s.rowInPart;
    const p = {
      M: a.M, N: s.rows, K, wRowInPart: s.rowInPart, yCol: s.offset, yStride: r1 - r0, accumulate: a.accumulate ? 1 : 0,
      loraK0, depth: loraK0 + r, r, loraBRow: wRow, scale: a.lora?.scale ?? 0,
    };
    const cost = {
      flops: 2 * a.M * s.rows * (K + r),
      bytes: 4 * a.M * K + s.rows * matrixRowBytes(K, a.w.dtype) + 4 * a.M * s.rows * (a.accumulate || a.residual ? 2 : 1) + 4 * (a.M + s.rows) * r,
    };
    matmulLayout(variant).dispatch(prog, `${label}[${wRow}]`, matmulWgsl(variant), {
      x: a.x, w: s.part.buffer, y: a.y, p, t: a.lora?.t, loraB: a.lora?.B, residual: a.residual,
    }, tiledProductWorkgroups(tile, a.M, s.rows), cost);
  }
}

/**
 * Plain-TS reference: x [M, K], w [N, K] -> x · wᵀ [M, N], plus scale · t · Bᵀ (t [M, r], B [N, r]) with `lora`,
 * plus `residual` [M, N].
 */
export function matmulRef(
  x: Float32Array,
  w: Float32Array,
  M: number,
  N: number,
  K: number,
  extra: { lora?: { t: Float32Array; B: Float32Array; r: number; scale: number }; residual?: Float32Array } = {},
): Float32Array {
  const { lora, residual } = extra;
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k]! * w[n * K + k]!;
      for (let j = 0; j < (lora?.r ?? 0); j++) s += lora!.scale * lora!.t[m * lora!.r + j]! * lora!.B[n * lora!.r + j]!;
      y[m * N + n] = (residual ? residual[m * N + n]! : 0) + s;
    }
  }
  return y;
}
