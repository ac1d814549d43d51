// Qwen3's per-head Q/K RMSNorm fused with RoPE, Q and K in one dispatch: y = rope(rmsnorm_head(x) * w) for every
// head of the q projection's output [N, nHeads*headDim] (w = q_norm) and of the k projection's [N, nKv*headDim]
// (w = k_norm), saving 1/rms per (token, head) for the backward. One pass instead of a norm, a write, and a
// read-modify-write by RoPE; same rounding and angles as rmsnorm.ts followed by rope.ts.
//
// Q and K lie in adjacent ranges of one buffer (k from a 256-aligned float kStart on), so the kernel binds x and y
// once each: rows 0..N*nHeads-1 are the q heads (token row / nHeads), the next N*nKv the k heads, and rstd holds
// the q rows then the k rows.
//
// Layout: `lanes` consecutive invocations share one (token, head) row, each holding the rotation pairs
// (i, i + headDim/2) for i = lane, lane + lanes, ... in registers; a 64-wide workgroup covers 64/lanes rows, so
// short heads (headDim 8..64) still fill the workgroup. headDim > 64 gives one row per workgroup, which takes the
// subgroup row sum where the device has subgroups.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { grid, type Binding, type BufferRange, type Program } from '../gpu/program.js';
import { enableSubgroupsWgsl, rmsnormRef, rowSumWgsl, useSubgroups } from './rmsnorm.js';
import { ropeInvFreq, ropeRef, ropeSinCosWgsl } from './rope.js';

/** Invocations per workgroup, for both directions. */
export const QK_WG = 64;

/** A Q thing and its K counterpart. */
export interface QkPair<T> {
  q: T;
  k: T;
}

/** The heads of one call: q heads [N, nHeads*headDim] and k heads [N, nKv*headDim]. */
export interface QkShape {
  N: number;
  nHeads: number;
  nKv: number;
  headDim: number;
}

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
 * The binding that spans a q range and the k range after it in the same buffer, and k's first float within it.
 * Every q/k pair one call binds must share that kStart (the kernel indexes them all alike). The memory plan checks
 * that the buffer fits one binding (train/memory-plan.ts, largest buffer), as for any activation.
 */
export function qkSpan(pairs: QkPair<BufferRange>[], s: QkShape, label: string): { spans: BufferRange[]; kStart: number } {
  const qBytes = s.N * s.nHeads * s.headDim * 4;
  const kBytes = s.N * s.nKv * s.headDim * 4;
  const kStart = (pairs[0]!.k.offset - pairs[0]!.q.offset) / 4;
  const spans = pairs.map(({ q, k }) => {
    if (q.buffer !== k.buffer || k.offset - q.offset !== kStart * 4 || q.size !== qBytes || k.size !== kBytes || kStart * 4 < qBytes) {
      throw new Error(`${label}: q and k must be ranges of ${qBytes} and ${kBytes} bytes of one buffer, k after q at the same distance in every pair`);
    }
    return { buffer: q.buffer, offset: q.offset, size: kStart * 4 + kBytes };
  });
  return { spans, kStart };
}

/** The uniforms both directions share: rows (q then k), the q/k boundary, heads of each, k's first float. */
export function qkRowParams(s: QkShape, kStart: number) {
  const qRows = s.N * s.nHeads;
  return { rows: qRows + s.N * s.nKv, qRows, nHeads: s.nHeads, nKv: s.nKv, kStart };
}

export const qkRowFields = { rows: 'u32', qRows: 'u32', nHeads: 'u32', nKv: 'u32', kStart: 'u32' } as const;

/**
 * WGSL preamble for both directions: the row of this invocation (`row`, `live`, `lane`, `isK`, `base`,
 * `position`), after returning from workgroups wholly past the end. Needs qkRowFields in `p`.
 */
export function qkRowWgsl(l: QkLayout): string {
  return /* wgsl */ `
  let firstRow = (wid.x + wid.y * nwg.x) * ${l.rowsPerGroup}u;
  if (firstRow >= p.rows) { return; }
  let row = firstRow + lid / ${l.lanes}u;
  let lane = lid % ${l.lanes}u;
  let live = row < p.rows;
  let isK = row >= p.qRows;
  let headRow = row - select(0u, p.qRows, isK);
  let base = select(0u, p.kStart, isK) + headRow * ${l.headDim}u;
  let position = positions[select(0u, headRow / select(p.nHeads, p.nKv, isK), live)];`;
}

/** Helpers for both directions: RoPE's sin/cos, the row sum, the pair constants, the row's norm weight. */
export function qkHelpersWgsl(l: QkLayout): string {
  return /* wgsl */ `
${ropeSinCosWgsl}
${rowSumWgsl({ wg: QK_WG, lanes: l.lanes, subgroups: l.subgroups })}
const HALF = ${l.half}u;
const PAIRS = ${l.pairsPerLane}u;
fn weight(i: u32, isK: bool) -> f32 { return select(wq[i], wk[i], isK); }`;
}

const layout = kernelLayout({
  x: storage(),
  wq: storage(),
  wk: storage(),
  y: output(),
  rstd: output(),
  positions: storage('array<u32>'),
  invFreq: storage(),
  p: uniform({ ...qkRowFields, eps: 'f32', zero: 'u32' }),
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
    if (live & (i < HALF)) {
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
      let a = x1[k] * r * weight(i, isK);
      let b = x2[k] * r * weight(i + HALF, isK);
      let sc = sinCos(ropeAngle(position, invFreq[i], p.zero));
      y[base + i] = a * sc.y - b * sc.x;
      y[base + i + HALF] = b * sc.y + a * sc.x;
    }
  }
  if (lane == 0u) { rstd[row] = r; }
}`;
}

export interface QkNormRopeArgs extends QkShape {
  /** The q and k projections' outputs, f32 [N, nHeads*headDim] and [N, nKv*headDim]: ranges of one buffer, k after q. */
  x: QkPair<BufferRange>;
  /** The head norm weights (q_norm, k_norm), f32 [headDim] each. */
  weight: QkPair<Binding>;
  /** Q and K after norm and RoPE, laid out as x (k at the same distance after q); must not overlap x. */
  y: QkPair<BufferRange>;
  /** f32 [N*nHeads + N*nKv]: 1/rms per (token, q head), then per (token, k head), for the backward. */
  rstd: Binding;
  /** u32[N]. */
  positions: Binding;
  theta: number;
  eps: number;
  /** Subgroup row sum (taken for headDim > 64 only); defaults to whether the device has subgroups. */
  subgroups?: boolean;
}

export function recordQkNormRope(prog: Program, a: QkNormRopeArgs, label = 'qk-norm-rope'): void {
  const shape = qkLayout(a.headDim, useSubgroups(prog.gpu, a.subgroups));
  const { spans: [x, y], kStart } = qkSpan([a.x, a.y], a, label);
  const p = { ...qkRowParams(a, kStart), eps: a.eps, zero: 0 };
  const invFreq = prog.gpu.upload(ropeInvFreq(a.headDim, a.theta), `${label}.inv_freq`);
  const bindings = { x: x!, wq: a.weight.q, wk: a.weight.k, y: y!, rstd: a.rstd, positions: a.positions, invFreq, p };
  // Per element: square and sum, normalise and weight (4), rotate (3); x read, y written, a rstd per row.
  const count = p.rows * a.headDim;
  const cost = { flops: 7 * count, bytes: 4 * (2 * count + p.rows + 2 * a.headDim) };
  layout.dispatch(prog, label, qkNormRopeWgsl(shape), bindings, grid(Math.ceil(p.rows / shape.rowsPerGroup)), cost);
}

/** Plain-TS reference: per part (q with q_norm, k with k_norm), rmsnormRef per head, then ropeRef; rstd q rows then k rows. */
export function qkNormRopeRef(
  x: QkPair<Float32Array>,
  w: QkPair<Float32Array>,
  positions: Uint32Array,
  s: QkShape,
  theta: number,
  eps: number,
): { y: QkPair<Float32Array>; rstd: Float32Array } {
  const part = (xs: Float32Array, ws: Float32Array, heads: number) => {
    const { y, rstd } = rmsnormRef(xs, ws, s.N * heads, s.headDim, eps);
    return { y: ropeRef(y, positions, s.N, heads, s.headDim, theta), rstd };
  };
  const q = part(x.q, w.q, s.nHeads);
  const k = part(x.k, w.k, s.nKv);
  const rstd = new Float32Array(q.rstd.length + k.rstd.length);
  rstd.set(q.rstd);
  rstd.set(k.rstd, q.rstd.length);
  return { y: { q: q.y, k: k.y }, rstd };
}
