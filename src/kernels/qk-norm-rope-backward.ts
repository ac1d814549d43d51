// Backward of qk-norm-rope.ts: dx = rmsnorm_backward(rope_inverse(dy)) in one pass, with the head norm weight
// frozen: for each pair, g = R(-angle) dy, then dx = r*w*g - x * r^3 * mean(w*g*x) over the head, r = saved rstd.
// Same layout (lanes per row, pairs in registers) and row sum as the forward.
import { entryWgsl, kernelLayout, storage, uniform } from '../gpu/kernel.js';
import { grid, type Binding, type Program } from '../gpu/program.js';
import { QK_WG, qkHelpersWgsl, qkLayout, qkRowWgsl, type QkLayout } from './qk-norm-rope.js';
import { enableSubgroupsWgsl, useSubgroups } from './rmsnorm.js';
import { rmsnormBackwardBuffers, rmsnormBackwardRef } from './rmsnorm-backward.js';
import { ropeInvFreq, ropeRef } from './rope.js';

const layout = kernelLayout({
  ...rmsnormBackwardBuffers,
  positions: storage('array<u32>'),
  invFreq: storage(),
  p: uniform({ rows: 'u32', heads: 'u32', zero: 'u32' }),
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
    if (live && i < HALF) {
      let sc = sinCos(ropeAngle(position, invFreq[i], p.zero));
      let d1 = dy[base + i];
      let d2 = dy[base + i + HALF];
      g1[k] = d1 * sc.y + d2 * sc.x;
      g2[k] = d2 * sc.y - d1 * sc.x;
      x1[k] = x[base + i];
      x2[k] = x[base + i + HALF];
      dot += w[i] * g1[k] * x1[k] + w[i + HALF] * g2[k] * x2[k];
    }
  }
  let total = rowSum(dot, lid);
  if (!live) { return; }
  let r = rstd[row];
  let c = r * r * r * total / f32(${l.headDim}u);
  for (var k = 0u; k < PAIRS; k++) {
    let i = lane + k * ${l.lanes}u;
    if (i < HALF) {
      dx[base + i] = r * w[i] * g1[k] - c * x1[k];
      dx[base + i + HALF] = r * w[i + HALF] * g2[k] - c * x2[k];
    }
  }
}`;
}

export interface QkNormRopeBackwardArgs {
  /** The forward's input (the q or k projection output), f32 [N, heads*headDim]. */
  x: Binding;
  weight: Binding;
  /** 1/rms per (token, head), as saved by recordQkNormRope. */
  rstd: Binding;
  /** Gradient of the forward's output. */
  dy: Binding;
  /** Gradient of x, overwritten; must not overlap dy or x. */
  dx: Binding;
  positions: Binding;
  N: number;
  heads: number;
  headDim: number;
  theta: number;
  /** Subgroup row sum (taken for headDim > 64 only); defaults to whether the device has subgroups. */
  subgroups?: boolean;
}

export function recordQkNormRopeBackward(prog: Program, a: QkNormRopeBackwardArgs, label = 'qk-norm-rope-backward'): void {
  const shape = qkLayout(a.headDim, useSubgroups(prog.gpu, a.subgroups));
  const rows = a.N * a.heads;
  const invFreq = prog.gpu.upload(ropeInvFreq(a.headDim, a.theta), `${label}.inv_freq`);
  const bindings = { x: a.x, w: a.weight, rstd: a.rstd, dy: a.dy, dx: a.dx, positions: a.positions, invFreq, p: { rows, heads: a.heads, zero: 0 } };
  // Per element: rotate back (3), the norm's backward (about 8); x and dy read, dx written, a rstd per row.
  const count = rows * a.headDim;
  const cost = { flops: 11 * count, bytes: 4 * (3 * count + rows + a.headDim) };
  layout.dispatch(prog, label, qkNormRopeBackwardWgsl(shape), bindings, grid(Math.ceil(rows / shape.rowsPerGroup)), cost);
}

/** Plain-TS reference: ropeRef inverse, then rmsnormBackwardRef per head. */
export function qkNormRopeBackwardRef(
  x: Float32Array,
  w: Float32Array,
  rstd: Float32Array,
  dy: Float32Array,
  positions: Uint32Array,
  N: number,
  heads: number,
  headDim: number,
  theta: number,
): Float32Array {
  const g = ropeRef(dy, positions, N, heads, headDim, theta, true);
  return rmsnormBackwardRef(x, w, rstd, g, N * heads, headDim);
}
