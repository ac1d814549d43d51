// Qwen3's per-head Q/K RMSNorm fused with RoPE: y = rope(rmsnorm_head(x) * w) for x = the q or k projection
// [N, heads*headDim], saving 1/rms per (token, head) for the backward. One pass instead of a norm, a write, and a
// read-modify-write by RoPE. Same rounding and angles as rmsnorm.ts followed by rope.ts.
//
// Layout: `lanes` consecutive invocations share one (token, head) row, each holding the rotation pairs
// (i, i + headDim/2) for i = lane, lane + lanes, ... in registers; a 64-wide workgroup covers 64/lanes rows, so
// short heads (headDim 8..64) still fill the workgroup. headDim > 64 gives one row per workgroup, which takes the
// subgroup row sum where the device has subgroups.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { grid, type Binding, type Program } from '../gpu/program.js';
import { enableSubgroupsWgsl, rmsnormRef, rowSumWgsl, useSubgroups } from './rmsnorm.js';
import { ropeInvFreq, ropeRef, ropeSinCosWgsl } from './rope.js';

/** Invocations per workgroup, for both directions. */
export const QK_WG = 64;

/** How a head of `headDim` maps onto a workgroup; shared with the backward. */
export interface QkLayout {
  headDim: number;
  half: number;
  /** Invocations per row (a power of two <= WG). */
  lanes: number;
  /** Rows per workgroup. */
  rowsPerGroup: number;
  /** Pairs each invocation holds. */
  pairsPerLane: number;
  subgroups: boolean;
}

export function qkLayout(headDim: number, subgroupsAvailable: boolean): QkLayout {
  if (headDim % 2 !== 0 || headDim < 2) throw new Error(`RoPE needs an even head_dim, got ${headDim}`);
  const half = headDim / 2;
  const lanes = Math.min(QK_WG, 2 ** Math.ceil(Math.log2(half)));
  return {
    headDim,
    half,
    lanes,
    rowsPerGroup: QK_WG / lanes,
    pairsPerLane: Math.ceil(half / lanes),
    subgroups: subgroupsAvailable && lanes === QK_WG,
  };
}

/**
 * WGSL preamble for both directions: the row of this invocation (`row`, `live`, `lane`, `base`), after returning
 * from workgroups wholly past the end. Needs Params { rows, heads, ... } as `p`.
 */
export function qkRowWgsl(l: QkLayout): string {
  return /* wgsl */ `
  let firstRow = (wid.x + wid.y * nwg.x) * ${l.rowsPerGroup}u;
  if (firstRow >= p.rows) { return; }
  let row = firstRow + lid / ${l.lanes}u;
  let lane = lid % ${l.lanes}u;
  let live = row < p.rows;
  let base = row * ${l.headDim}u;
  let position = positions[select(0u, row / p.heads, live)];`;
}

/** Helpers for both directions: RoPE's sin/cos, the row sum, the pair constants. */
export function qkHelpersWgsl(l: QkLayout): string {
  return /* wgsl */ `
${ropeSinCosWgsl}
${rowSumWgsl({ wg: QK_WG, lanes: l.lanes, subgroups: l.subgroups })}
const HALF = ${l.half}u;
const PAIRS = ${l.pairsPerLane}u;`;
}

const layout = kernelLayout({
  x: storage(),
  w: storage(),
  y: output(),
  rstd: output(),
  positions: storage('array<u32>'),
  invFreq: storage(),
  p: uniform({ rows: 'u32', heads: 'u32', eps: 'f32', zero: 'u32' }),
});

export function qkNormRopeWgsl(l: QkLayout): string {
  return /* wgsl */ `${enableSubgroupsWgsl(l.subgroups)}
${layout.wgsl}
${qkHelpersWgsl(l)}

${entryWgsl(QK_WG)} {
${qkRowWgsl(l)}
  var x1: array<f32, PAIRS>;
  var x2: array<f32, PAIRS>;
  var ss = 0.0;
  for (var k = 0u; k < PAIRS; k++) {
    let i = lane + k * ${l.lanes}u;
    if (live && i < HALF) {
      x1[k] = x[base + i];
      x2[k] = x[base + i + HALF];
      ss += x1[k] * x1[k] + x2[k] * x2[k];
    }
  }
  let r = inverseSqrt(rowSum(ss, lid) / f32(${l.headDim}u) + p.eps);
  if (!live) { return; }
  for (var k = 0u; k < PAIRS; k++) {
    let i = lane + k * ${l.lanes}u;
    if (i < HALF) {
      let a = x1[k] * r * w[i];
      let b = x2[k] * r * w[i + HALF];
      let sc = sinCos(ropeAngle(position, invFreq[i], p.zero));
      y[base + i] = a * sc.y - b * sc.x;
      y[base + i + HALF] = b * sc.y + a * sc.x;
    }
  }
  if (lane == 0u) { rstd[row] = r; }
}`;
}

export interface QkNormRopeArgs {
  /** f32 [N, heads*headDim]: the q or k projection output. */
  x: Binding;
  /** The head norm weight, f32 [headDim]. */
  weight: Binding;
  /** f32 [N, heads*headDim]; must not overlap x. */
  y: Binding;
  /** f32 [N*heads]: 1/rms per (token, head), for the backward. */
  rstd: Binding;
  /** u32[N]. */
  positions: Binding;
  N: number;
  heads: number;
  headDim: number;
  theta: number;
  eps: number;
  /** Subgroup row sum (taken for headDim > 64 only); defaults to whether the device has subgroups. */
  subgroups?: boolean;
}

export function recordQkNormRope(prog: Program, a: QkNormRopeArgs, label = 'qk-norm-rope'): void {
  const shape = qkLayout(a.headDim, useSubgroups(prog.gpu, a.subgroups));
  const rows = a.N * a.heads;
  const invFreq = prog.gpu.upload(ropeInvFreq(a.headDim, a.theta), `${label}.inv_freq`);
  const bindings = { x: a.x, w: a.weight, y: a.y, rstd: a.rstd, positions: a.positions, invFreq, p: { rows, heads: a.heads, eps: a.eps, zero: 0 } };
  // Per element: square and sum, normalise and weight (4), rotate (3); x read, y written, a rstd per row.
  const count = rows * a.headDim;
  const cost = { flops: 7 * count, bytes: 4 * (2 * count + rows + a.headDim) };
  layout.dispatch(prog, label, qkNormRopeWgsl(shape), bindings, grid(Math.ceil(rows / shape.rowsPerGroup)), cost);
}

/** Plain-TS reference: rmsnormRef per head, then ropeRef. */
export function qkNormRopeRef(
  x: Float32Array,
  w: Float32Array,
  positions: Uint32Array,
  N: number,
  heads: number,
  headDim: number,
  theta: number,
  eps: number,
): { y: Float32Array; rstd: Float32Array } {
  const { y, rstd } = rmsnormRef(x, w, N * heads, headDim, eps);
  return { y: ropeRef(y, positions, N, heads, headDim, theta), rstd };
}
