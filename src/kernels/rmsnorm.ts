// RMSNorm over the last dimension: y = x * rsqrt(mean(x^2) + eps) * w. Serves the layer norms, the final norm
// and, unfused, per-head Q/K norms (rows = tokens * heads; qk-norm-rope.ts fuses those with RoPE). Saves 1/rms per row for the backward. With `residual`, it first adds the residual stream in place
// (x <- x + residual) and normalizes that sum, which saves the separate add pass of a pre-norm block.
//
// Row sums come from `rowSumWgsl`, shared with the other row-reducing kernels: a workgroup-memory tree, or, where
// the device has subgroups, subgroupAdd plus one workgroup-memory exchange across subgroups.
import type { Gpu } from '../gpu/device.js';
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';

const WG = 64;

export interface RowSumOptions {
  /** Invocations per workgroup (a power of two). */
  wg: number;
  /** Consecutive invocations (by local_invocation_index) that share one sum: a power of two dividing wg. */
  lanes: number;
  /** Use subgroup operations; only for lanes == wg (subgroups need not be consecutive invocations). */
  subgroups: boolean;
}

/** `enable subgroups;` where the variant uses them; WGSL wants it before any declaration. */
export function enableSubgroupsWgsl(subgroups: boolean): string {
  return subgroups ? 'enable subgroups;' : '';
}

/**
 * WGSL `fn rowSum(v: f32, lid: u32) -> f32`: the sum of `v` over the `lanes` invocations of lid's group, returned
 * to each of them. Every invocation of the workgroup must call it, once, from uniform control flow.
 *
 * The subgroup form assumes nothing about how invocations map to subgroups nor about their size (4..64 here)
 * or fullness: each subgroup's first active invocation leaves its subgroupAdd in its own slot (the others leave
 * 0), and then each invocation sums the slots congruent to its rank among the active ones modulo their count,
 * so a second subgroupAdd covers every slot exactly once.
 */
export function rowSumWgsl(o: RowSumOptions): string {
  if (o.subgroups) {
    if (o.lanes !== o.wg) throw new Error(`a subgroup row sum spans the whole workgroup (lanes ${o.lanes}, wg ${o.wg})`);
    return /* wgsl */ `
var<workgroup> partial: array<f32, ${o.wg}>;
fn rowSum(v: f32, lid: u32) -> f32 {
  let own = subgroupAdd(v);
  let rank = subgroupExclusiveAdd(1u);
  let members = subgroupAdd(1u);
  partial[lid] = select(0.0, own, rank == 0u);
  workgroupBarrier();
  var t = 0.0;
  for (var j = rank; j < ${o.wg}u; j += members) { t += partial[j]; }
  return subgroupAdd(t);
}`;
  }
  return /* wgsl */ `
var<workgroup> partial: array<f32, ${o.wg}>;
fn rowSum(v: f32, lid: u32) -> f32 {
  let lane = lid % ${o.lanes}u;
  partial[lid] = v;
  workgroupBarrier();
  for (var s = ${o.lanes >> 1}u; s > 0u; s >>= 1u) {
    if (lane < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  return partial[lid - lane];
}`;
}

/** Whether a launcher uses subgroups: as asked, else wherever the device has them. */
export function useSubgroups(gpu: Gpu, asked: boolean | undefined): boolean {
  if (asked && !gpu.features.subgroups) throw new Error('subgroup variant asked for, but the device has no subgroups');
  return asked ?? gpu.features.subgroups;
}

export interface RmsNormVariant {
  /** x is read_write and becomes x + residual before it is normalized. */
  residual: boolean;
  subgroups: boolean;
}

function rmsnormLayout(v: RmsNormVariant) {
  return kernelLayout({
    x: v.residual ? output() : storage(),
    w: storage(),
    y: output(),
    rstd: output(),
    residual: v.residual ? storage() : undefined,
    p: uniform({ rows: 'u32', n: 'u32', eps: 'f32' }),
  });
}

export function rmsnormWgsl(v: RmsNormVariant): string {
  const load = v.residual ? 'let s = x[base + i] + residual[base + i]; x[base + i] = s;' : 'let s = x[base + i];';
  return /* wgsl */ `${enableSubgroupsWgsl(v.subgroups)}
${rmsnormLayout(v).wgsl}
${rowSumWgsl({ wg: WG, lanes: WG, subgroups: v.subgroups })}

${entryWgsl(WG)} {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var ss = 0.0;
  for (var i = lid; i < p.n; i += ${WG}u) { ${load} ss += s * s; }
  let r = inverseSqrt(rowSum(ss, lid) / f32(p.n) + p.eps);
  // Each invocation reads back only the elements it wrote itself, so the in-place sum needs no barrier.
  for (var i = lid; i < p.n; i += ${WG}u) { y[base + i] = x[base + i] * r * w[i]; }
  if (lid == 0u) { rstd[row] = r; }
}`;
}

export interface RmsNormArgs {
  /** [rows, n]; with `residual` it must be writable and receives x + residual. */
  x: Binding;
  weight: Binding;
  y: Binding;
  rstd: Binding;
  rows: number;
  n: number;
  eps: number;
  /** [rows, n] added into x before normalizing (must not overlap x). */
  residual?: Binding;
  /** Subgroup reduction; defaults to whether the device has subgroups (tests force either). */
  subgroups?: boolean;
}

export function recordRmsNorm(prog: Program, a: RmsNormArgs, label = 'rmsnorm'): void {
  const variant = { residual: a.residual !== undefined, subgroups: useSubgroups(prog.gpu, a.subgroups) };
  const p = { rows: a.rows, n: a.n, eps: a.eps };
  const bindings = { x: a.x, w: a.weight, y: a.y, rstd: a.rstd, residual: a.residual, p };
  // Per element: square and sum, normalise and weight (4, and the residual add); x read, y written (x too with a residual).
  const count = a.rows * a.n;
  const cost = { flops: (a.residual ? 5 : 4) * count, bytes: 4 * ((a.residual ? 4 : 2) * count + a.rows + a.n) };
  rmsnormLayout(variant).dispatch(prog, label, rmsnormWgsl(variant), bindings, a.rows, cost);
}

/** Plain-TS reference; `sum` is the normalized input (x + residual when given, else x). */
export function rmsnormRef(
  x: Float32Array,
  w: Float32Array,
  rows: number,
  n: number,
  eps: number,
  residual?: Float32Array,
): { y: Float32Array; rstd: Float32Array; sum: Float32Array } {
  const sum = residual ? x.map((v, i) => v + residual[i]!) : x;
  const y = new Float32Array(rows * n);
  const rstd = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += sum[r * n + i]! ** 2;
    const s = 1 / Math.sqrt(ss / n + eps);
    rstd[r] = s;
    for (let i = 0; i < n; i++) y[r * n + i] = sum[r * n + i]! * s * w[i]!;
  }
  return { y, rstd, sum };
}
