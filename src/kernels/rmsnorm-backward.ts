// Input gradient of RMSNorm (src/kernels/rmsnorm.ts) with the weight frozen: for y = x * r * w, r = rstd saved by
// the forward, dx = r * (w*dy) - x * r^3 * mean((w*dy) * x). One workgroup per row, as in the forward, with the
// same row sum (subgroup variant where the device has subgroups).
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';
import { enableSubgroupsWgsl, rowSumWgsl, useSubgroups } from './rmsnorm.js';

const WG = 64;

const layout = kernelLayout({ x: storage(), w: storage(), rstd: storage(), dy: storage(), dx: output(), p: uniform({ rows: 'u32', n: 'u32', accumulate: 'u32' }) });

export function rmsnormBackwardWgsl(subgroups: boolean): string {
  return /* wgsl */ `${enableSubgroupsWgsl(subgroups)}
${layout.wgsl}
${rowSumWgsl({ wg: WG, lanes: WG, subgroups })}

${entryWgsl(WG)} {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var dot = 0.0;
  for (var i = lid; i < p.n; i += ${WG}u) { dot += w[i] * dy[base + i] * x[base + i]; }
  let total = rowSum(dot, lid);
  let r = rstd[row];
  let c = r * r * r * total / f32(p.n);
  for (var i = lid; i < p.n; i += ${WG}u) {
    let g = r * w[i] * dy[base + i] - c * x[base + i];
    if (p.accumulate != 0u) { dx[base + i] += g; } else { dx[base + i] = g; }
  }
}`;
}

export interface RmsNormBackwardArgs {
  x: Binding;
  weight: Binding;
  /** 1/rms per row, as saved by recordRmsNorm. */
  rstd: Binding;
  dy: Binding;
  dx: Binding;
  rows: number;
  n: number;
  /** Add into dx (the residual stream's gradient) instead of overwriting it. */
  accumulate?: boolean;
  /** Subgroup reduction; defaults to whether the device has subgroups (tests force either). */
  subgroups?: boolean;
}

export function recordRmsNormBackward(prog: Program, a: RmsNormBackwardArgs, label = 'rmsnorm-backward'): void {
  const code = rmsnormBackwardWgsl(useSubgroups(prog.gpu, a.subgroups));
  const p = { rows: a.rows, n: a.n, accumulate: a.accumulate ? 1 : 0 };
  // Per element: the row dot Σ dy·w·x (3) and dx (4); x and dy read, dx written (and read when accumulating).
  const count = a.rows * a.n;
  const cost = { flops: 7 * count, bytes: 4 * ((a.accumulate ? 4 : 3) * count + a.rows + a.n) };
  layout.dispatch(prog, label, code, { x: a.x, w: a.weight, rstd: a.rstd, dy: a.dy, dx: a.dx, p }, a.rows, cost);
}

/** Plain-TS reference: dx for rows x n, given the forward's rstd. */
export function rmsnormBackwardRef(x: Float32Array, w: Float32Array, rstd: Float32Array, dy: Float32Array, rows: number, n: number): Float32Array {
  const dx = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const s = rstd[r]!;
    let dot = 0;
    for (let i = 0; i < n; i++) dot += w[i]! * dy[r * n + i]! * x[r * n + i]!;
    const c = (s * s * s * dot) / n;
    for (let i = 0; i < n; i++) dx[r * n + i] = s * w[i]! * dy[r * n + i]! - c * x[r * n + i]!;
  }
  return dx;
}
