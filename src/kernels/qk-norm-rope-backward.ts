// Backward of qk-norm-rope.ts, Q and K heads in one dispatch: dx = rmsnorm_backward(rope_inverse(dy)) in one pass,
// with the head norm weights frozen: for each pair, g = R(-angle) dy, then dx = r*w*g - x * r^3 * mean(w*g*x) over
// the head, r = saved rstd, w = q_norm for the q heads and k_norm for the k heads. x, dy and dx are each q and k in
// adjacent ranges of one buffer at the forward's kStart; same rows, layout (lanes per row, pairs in registers) and
// row sum as the forward.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { grid, type Binding, type BufferRange, type Program } from '../gpu/program.js';
import { QK_WG, qkHelpersWgsl, qkLayout, qkRowFields, qkRowParams, qkRowWgsl, qkSpan, type QkLayout, type QkPair, type QkShape } from './qk-norm-rope.js';
import { enableSubgroupsWgsl, useSubgroups } from './rmsnorm.js';
import { rmsnormBackwardRef } from './rmsnorm-backward.js';
import { ropeInvFreq, ropeRef } from './rope.js';

// Eight storage bindings: the portable limit per shader stage.
const layout = kernelLayout({
  x: storage(),
  wq: storage(),
  wk: storage(),
  rstd: storage(),
  dy: storage(),
  dx: output(),
  positions: storage('array<u32>'),
  invFreq: storage(),
  p: uniform({ ...qkRowFields, zero: 'u32' }),
});

export function qkNormRopeBackwardWgsl(l: QkLayout): string {
  return /* wgsl */ `${enableSubgroupsWgsl(l.subgroups)}
${layout.wgsl}
${qkHelpersWgsl(l)}

${entryWgsl(QK_WG)} {
${qkRowWgsl(l)}
  var x1: array<f32, PAIRS>;
  var x2: array<f32, PAIRS>;
  var g1: array<f32, PAIRS>;
  var g2: array<f32, PAIRS>;
  var dot = 0.0;
  for (var k = 0u; k < PAIRS; k++) {
    let i = lane + k * ${l.lanes}u;
    if (live & (i < HALF)) {
      let sc = sinCos(ropeAngle(position, invFreq[i], p.zero));
      let d1 = dy[base + i];
      let d2 = dy[base + i + HALF];
      g1[k] = d1 * sc.y + d2 * sc.x;
      g2[k] = d2 * sc.y - d1 * sc.x;
      x1[k] = x[base + i];
      x2[k] = x[base + i + HALF];
      dot += weight(i, isK) * g1[k] * x1[k] + weight(i + HALF, isK) * g2[k] * x2[k];
    }
  }
  let total = rowSum(dot, lid);
  if (!live) { return; }
  let r = rstd[row];
  let c = r * r * r * total / f32(${l.headDim}u);
  for (var k = 0u; k < PAIRS; k++) {
    let i = lane + k * ${l.lanes}u;
    if (i < HALF) {
      dx[base + i] = r * weight(i, isK) * g1[k] - c * x1[k];
      dx[base + i + HALF] = r * weight(i + HALF, isK) * g2[k] - c * x2[k];
    }
  }
}`;
}

export interface QkNormRopeBackwardArgs extends QkShape {
  /** The forward's input (the q and k projections' outputs): ranges of one buffer, k after q. */
  x: QkPair<BufferRange>;
  /** q_norm and k_norm, f32 [headDim] each. */
  weight: QkPair<Binding>;
  /** 1/rms per row (q rows, then k rows), as saved by recordQkNormRope. */
  rstd: Binding;
  /** Gradient of the forward's output, laid out as x. */
  dy: QkPair<BufferRange>;
  /** Gradient of x, laid out as x, overwritten; a different buffer from dy and x (WebGPU refuses a writable binding of a buffer the dispatch also reads). */
  dx: QkPair<BufferRange>;
  positions: Binding;
  theta: number;
  /** Subgroup row sum (taken for headDim > 64 only); defaults to whether the device has subgroups. */
  subgroups?: boolean;
}

export function recordQkNormRopeBackward(prog: Program, a: QkNormRopeBackwardArgs, label = 'qk-norm-rope-backward'): void {
  const shape = qkLayout(a.headDim, useSubgroups(prog.gpu, a.subgroups));
  const { spans: [x, dy, dx], kStart } = qkSpan([a.x, a.dy, a.dx], a, label);
  const p = { ...qkRowParams(a, kStart), zero: 0 };
  const invFreq = prog.gpu.upload(ropeInvFreq(a.headDim, a.theta), `${label}.inv_freq`);
  const bindings = { x: x!, wq: a.weight.q, wk: a.weight.k, rstd: a.rstd, dy: dy!, dx: dx!, positions: a.positions, invFreq, p };
  // Per element: rotate back (3), the norm's backward (about 8); x and dy read, dx written, a rstd per row.
  const count = p.rows * a.headDim;
  const cost = { flops: 11 * count, bytes: 4 * (3 * count + p.rows + 2 * a.headDim) };
  layout.dispatch(prog, label, qkNormRopeBackwardWgsl(shape), bindings, grid(Math.ceil(p.rows / shape.rowsPerGroup)), cost);
}

/** Plain-TS reference: per part (q with q_norm and the first N*nHeads rstd, k with k_norm and the rest), ropeRef inverse, then rmsnormBackwardRef per head. */
export function qkNormRopeBackwardRef(
  x: QkPair<Float32Array>,
  w: QkPair<Float32Array>,
  rstd: Float32Array,
  dy: QkPair<Float32Array>,
  positions: Uint32Array,
  s: QkShape,
  theta: number,
): QkPair<Float32Array> {
  const qRows = s.N * s.nHeads;
  const part = (xs: Float32Array, ws: Float32Array, r: Float32Array, d: Float32Array, heads: number) => {
    const g = ropeRef(d, positions, s.N, heads, s.headDim, theta, true);
    return rmsnormBackwardRef(xs, ws, r, g, s.N * heads, s.headDim);
  };
  return {
    q: part(x.q, w.q, rstd.subarray(0, qRows), dy.q, s.nHeads),
    k: part(x.k, w.k, rstd.subarray(qRows), dy.k, s.nKv),
  };
}
