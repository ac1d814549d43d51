// Input gradient of RMSNorm (src/kernels/rmsnorm.ts) with the weight frozen: for y = x * r * w, r = rstd saved by
// the forward, dx = r * (w*dy) - x * r^3 * mean((w*dy) * x). One workgroup per row, as in the forward, with the
// same row sum (subgroup variant where the device has subgroups).
import type { Binding, Program } from '../gpu/program.js';
import { enableSubgroupsWgsl, rowSumWgsl, useSubgroups } from './rmsnorm.js';

const WG = 64;

export function rmsnormBackwardWgsl(subgroups: boolean): string {
  return /* wgsl */ `${enableSubgroupsWgsl(subgroups)}
struct Params { rows: u32, n: u32, accumulate: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> rstd: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${rowSumWgsl({ wg: WG, lanes: WG, subgroups })}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
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
  const params = prog.gpu.uniform([['u32', a.rows], ['u32', a.n], ['u32', a.accumulate ? 1 : 0]]);
  const code = rmsnormBackwardWgsl(useSubgroups(prog.gpu, a.subgroups));
  prog.add(label, code, [a.x, a.weight, a.rstd, a.dy, a.dx, params], a.rows);
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
