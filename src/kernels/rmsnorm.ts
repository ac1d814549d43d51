// RMSNorm over the last dimension: y = x * rsqrt(mean(x^2) + eps) * w. Serves the layer norms, the final norm
// and Qwen3's per-head Q/K norms (rows = tokens * heads, n = head_dim). Saves 1/rms per row for the backward.
import type { Binding, Program } from '../gpu/program.js';

const WG = 64;

export const rmsnormWgsl = /* wgsl */ `
struct Params { rows: u32, n: u32, eps: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
var<workgroup> partial: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var ss = 0.0;
  for (var i = lid; i < p.n; i += ${WG}u) { let v = x[base + i]; ss += v * v; }
  partial[lid] = ss;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  let r = inverseSqrt(partial[0] / f32(p.n) + p.eps);
  for (var i = lid; i < p.n; i += ${WG}u) { y[base + i] = x[base + i] * r * w[i]; }
  if (lid == 0u) { rstd[row] = r; }
}`;

export interface RmsNormArgs {
  x: Binding;
  weight: Binding;
  y: Binding;
  rstd: Binding;
  rows: number;
  n: number;
  eps: number;
}

export function recordRmsNorm(prog: Program, a: RmsNormArgs, label = 'rmsnorm'): void {
  const params = prog.gpu.uniform([['u32', a.rows], ['u32', a.n], ['f32', a.eps]]);
  prog.add(label, rmsnormWgsl, [a.x, a.weight, a.y, a.rstd, params], a.rows);
}

/** Plain-TS reference. */
export function rmsnormRef(x: Float32Array, w: Float32Array, rows: number, n: number, eps: number): { y: Float32Array; rstd: Float32Array } {
  const y = new Float32Array(rows * n);
  const rstd = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[r * n + i]! ** 2;
    const s = 1 / Math.sqrt(ss / n + eps);
    rstd[r] = s;
    for (let i = 0; i < n; i++) y[r * n + i] = x[r * n + i]! * s * w[i]!;
  }
  return { y, rstd };
}
