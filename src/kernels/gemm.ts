// General f32 GEMM, C[M, N] = alpha · op(A) · op(B) + beta · C, on the shared tiled product (tiled-product.ts):
// the LoRA products that lora-down.ts and lora-backward.ts do not cover (dropout's dT·A; the factor gradients of
// a layer too large for lora-backward's scratch, or a rank past 1364 that no lora-backward tile holds), and the
// adapter merge. Thin products get their own shapes:
// - an output with few columns (N = the rank) takes a thin tile (128 x 8/16/32), not a 64-wide one;
// - an output with few rows (M = the rank, as in dA = dTᵀ·x) is computed transposed, Cᵀ = op(B)ᵀ · op(A)ᵀ,
//   so that the rank again lies along the thin side;
// - a long reduction over few output tiles (the factor gradients reduce over every token) is split over
//   workgroups into partial sums, then added in a fixed order by a second dispatch: the result does not depend
//   on scheduling, so it is the same run after run.
import type { Gpu } from '../gpu/device.js';
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';
import { programScratch } from './scratch.js';
import { chooseTile } from './tuning.js';
import {
  quadAligned, tiledProductWgsl, tiledProductWorkgroups, TILE_K, wgslQuadArray, wgslRowQuad,
  type RowQuadLayout, type TileConfig,
} from './tiled-product.js';

interface GemmVariant {
  transA: boolean;
  transB: boolean;
  /** Read A (B) as aligned vec4s: its row length is a multiple of 4. */
  vecA: boolean;
  vecB: boolean;
  /** Compute Cᵀ: the kernel's rows are C's columns. */
  swap: boolean;
  /** Write partial sums per reduction split instead of C. */
  split: boolean;
  tile: TileConfig;
}

const PARAMS = uniform({ M: 'u32', N: 'u32', K: 'u32', alpha: 'f32', beta: 'u32', kChunk: 'u32', am: 'u32', bn: 'u32' });

function gemmLayout(vecA: boolean, vecB: boolean) {
  return kernelLayout({ a: storage(wgslQuadArray('f32', vecA)), b: storage(wgslQuadArray('f32', vecB)), c: output(), p: PARAMS });
}

// In the kernel, p.M x p.N is the computed output (C, or Cᵀ when swapped); p.am and p.bn are op(A)'s rows and
// op(B)'s columns (C's shape), which place the operands in memory.
function gemmWgsl(v: GemmVariant): string {
  const matrix = (rows: string, cols: string): RowQuadLayout => ({ rows, cols, stride: cols, base: '0u' });
  // opA(m, k) and opB(n, k) with B as [N, K], each reading its binding in its memory order.
  const quadA = wgslRowQuad('quadA', 'a', 'f32', v.transA ? matrix('p.K', 'p.am') : matrix('p.am', 'p.K'), v.vecA);
  const quadB = wgslRowQuad('quadB', 'b', 'f32', v.transB ? matrix('p.bn', 'p.K') : matrix('p.K', 'p.bn'), v.vecB);
  const opA = (f: string) => (v.transA ? `${f}(k, m)` : `${f}(m, k)`);
  const opB = (f: string) => (v.transB ? `${f}(n, k)` : `${f}(k, n)`);
  const runA = v.transA ? 'm' : 'k';
  const runB = v.transB ? 'k' : 'n';
  const loaders = (suffix: string) => v.swap
    ? `fn loadA4${suffix}(n: u32, k: u32) -> vec4<f32> { return ${opB(`quadB${suffix}`)}; }
fn loadB4${suffix}(m: u32, k: u32) -> vec4<f32> { return ${opA(`quadA${suffix}`)}; }`
    : `fn loadA4${suffix}(m: u32, k: u32) -> vec4<f32> { return ${opA(`quadA${suffix}`)}; }
fn loadB4${suffix}(n: u32, k: u32) -> vec4<f32> { return ${opB(`quadB${suffix}`)}; }`;
  const store = v.split
    ? 'c[split * p.M * p.N + m * p.N + n] = v;'
    : `let i = ${v.swap ? 'n * p.M + m' : 'm * p.N + n'};
  // beta is 0 or 1; with 0, C is never read (it may hold garbage or NaN).
  if (p.beta != 0u) { c[i] = p.alpha * v + c[i]; } else { c[i] = p.alpha * v; }`;
  return tiledProductWgsl({
    aRun: v.swap ? (runB === 'n' ? 'm' : 'k') : runA,
    bRun: v.swap ? (runA === 'm' ? 'n' : 'k') : runB,
    fastDepth: 'p.K',
    splitK: v.split,
    tile: v.tile,
    declarations: `
${gemmLayout(v.vecA, v.vecB).wgsl}
${quadA}
${quadB}
${loaders('')}
${loaders('Fast')}
fn storeC(m: u32, n: u32, v: f32) {
  ${store}
}`,
  });
}

// C (= or +=) alpha · Σ_s partial[s] in the order s = 0, 1, …: one invocation per output element.
const REDUCE_LAYOUT = kernelLayout({
  partial: storage(),
  c: output(),
  p: uniform({ M: 'u32', N: 'u32', splits: 'u32', alpha: 'f32', beta: 'u32', swap: 'u32' }),
});

const REDUCE_WGSL = /* wgsl */ `
${REDUCE_LAYOUT.wgsl}

${entryWgsl(256)} {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  let count = p.M * p.N;
  if (i >= count) { return; }
  var s = 0.0;
  for (var z = 0u; z < p.splits; z++) { s += partial[z * count + i]; }
  let m = i / p.N;
  let n = i % p.N;
  let o = select(m * p.N + n, n * p.M + m, p.swap != 0u);
  if (p.beta != 0u) { c[o] = p.alpha * s + c[o]; } else { c[o] = p.alpha * s; }
}`;

/**
 * How many parts a reduction of length K over `tiles` output tiles is split into: enough workgroups to fill a
 * large GPU (about 256), each part at least 256 long and a multiple of the staged depth. Depends on the shape
 * alone, so a given product always sums in the same order.
 */
export function reductionSplits(tiles: number, K: number): { splits: number; chunk: number } {
  const want = Math.min(Math.floor(K / 256), Math.ceil(256 / tiles), 32);
  if (tiles >= 128 || want < 2) return { splits: 1, chunk: K };
  const chunk = Math.ceil(K / want / TILE_K) * TILE_K;
  return { splits: Math.ceil(K / chunk), chunk };
}

export interface GemmArgs {
  /** [M, K], or [K, M] with transA. */
  a: Binding;
  /** [K, N], or [N, K] with transB. */
  b: Binding;
  /** [M, N]. */
  c: Binding;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: 0 | 1;
}

/** How recordGemm computes a product: transposed or not, the tile, and the reduction split. */
export interface GemmPlan {
  swap: boolean;
  tile: TileConfig;
  splits: number;
  chunk: number;
}

export function gemmPlan(gpu: Gpu, M: number, N: number, K: number): GemmPlan {
  const swap = M <= 32 && N > M;
  const [rows, cols] = swap ? [N, M] : [M, N];
  const tile = chooseTile(gpu, 'gemm', rows, cols, K, 'f32');
  const tiles = tiledProductWorkgroups(tile, rows, cols);
  return { swap, tile, ...reductionSplits(tiles, K) };
}

/** Append C = alpha · op(A) · op(B) + beta · C. */
export function recordGemm(prog: Program, a: GemmArgs, label = 'gemm', plan = gemmPlan(prog.gpu, a.M, a.N, a.K)): void {
  if (a.M === 0 || a.N === 0) return;
  const transA = !!a.transA;
  const transB = !!a.transB;
  const { swap, tile, splits, chunk } = plan;
  const [rows, cols] = swap ? [a.N, a.M] : [a.M, a.N];
  const split = splits > 1;
  const vecA = quadAligned(transA ? a.M : a.K);
  const vecB = quadAligned(transB ? a.K : a.N);
  const code = gemmWgsl({ transA, transB, vecA, vecB, swap, split, tile });
  const p = { M: rows, N: cols, K: a.K, alpha: a.alpha ?? 1, beta: a.beta ?? 0, kChunk: chunk, am: a.M, bn: a.N };
  const layout = gemmLayout(vecA, vecB);
  const tiles = tiledProductWorkgroups(tile, rows, cols);
  const flops = 2 * a.M * a.N * a.K;
  const operandBytes = 4 * (a.M * a.K + a.K * a.N);
  const cBytes = 4 * a.M * a.N * (a.beta ? 2 : 1);
  if (!split) {
    layout.dispatch(prog, label, code, { a: a.a, b: a.b, c: a.c, p }, tiles, { flops, bytes: operandBytes + cBytes });
    return;
  }
  const partial = programScratch(prog, 'gemm.partial', splits * rows * cols * 4);
  layout.dispatch(prog, `${label}.split`, code, { a: a.a, b: a.b, c: partial, p }, splitGrid(tiles, splits), { flops, bytes: operandBytes + 4 * splits * a.M * a.N });
  REDUCE_LAYOUT.dispatch(prog, `${label}.sum`, REDUCE_WGSL, {
    partial, c: a.c, p: { M: rows, N: cols, splits, alpha: a.alpha ?? 1, beta: a.beta ?? 0, swap: swap ? 1 : 0 },
  }, Math.ceil((rows * cols) / 256), { flops: splits * a.M * a.N, bytes: 4 * splits * a.M * a.N + cBytes });
}

/** Workgroups for `tiles` output tiles times `splits` reduction parts (the split index is wid.z). */
function splitGrid(tiles: number, splits: number): [number, number, number] {
  const y = Math.ceil(tiles / 65535);
  return [Math.ceil(tiles / y), y, splits];
}

/** Plain-TS reference; `c` is the initial C (used when beta is 1) and is not modified. */
export function gemmRef(
  A: Float32Array,
  B: Float32Array,
  c: Float32Array | undefined,
  M: number,
  N: number,
  K: number,
  opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: 0 | 1 } = {},
): Float32Array {
  const alpha = opts.alpha ?? 1;
  if (opts.beta && !c) throw new Error('gemmRef: beta 1 needs the initial C');
  const out = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const av = opts.transA ? A[k * M + m]! : A[m * K + k]!;
        const bv = opts.transB ? B[n * K + k]! : B[k * N + n]!;
        s += av * bv;
      }
      out[m * N + n] = alpha * s + (opts.beta ? c![m * N + n]! : 0);
    }
  }
  return out;
}
