// Sum of squares over many gradient tensors (the square of clip_grad_norm_'s total norm), deterministic:
// each tensor's workgroups write fixed partial sums into a scratch buffer, then one workgroup adds them in a
// fixed order. No float atomics, so the same gradients always give the same bits.
import type { Binding, Program } from '../gpu/program.js';

const WG = 256;
/** Elements one workgroup should cover before another workgroup is worth adding. */
const ELEMS_PER_WORKGROUP = WG * 16;
/** Cap on partial sums per tensor, so the final single-workgroup pass stays short. */
const MAX_PARTIALS_PER_TENSOR = 64;

const partialWgsl = /* wgsl */ `
struct Params { count: u32, partialOffset: u32, numPartials: u32 }
@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> acc: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  var ss = 0.0;
  for (var i = wid.x * ${WG}u + lid; i < p.count; i += p.numPartials * ${WG}u) { let x = g[i]; ss += x * x; }
  acc[lid] = ss;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { acc[lid] += acc[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { partials[p.partialOffset + wid.x] = acc[0]; }
}`;

const finalWgsl = /* wgsl */ `
struct Params { count: u32 }
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> acc: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var ss = 0.0;
  for (var i = lid; i < p.count; i += ${WG}u) { ss += partials[i]; }
  acc[lid] = ss;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { acc[lid] += acc[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[0] = acc[0]; }
}`;

export interface GradSumSquaresArgs {
  grads: { buffer: Binding; count: number }[];
  /** f32; element 0 receives Σ g² over all tensors. */
  out: GPUBuffer;
}

export function recordGradSumSquares(prog: Program, a: GradSumSquaresArgs, label = 'grad-sumsq'): void {
  const gpu = prog.gpu;
  const tensors = a.grads
    .filter((t) => t.count > 0)
    .map((t) => ({ ...t, partials: Math.min(MAX_PARTIALS_PER_TENSOR, Math.ceil(t.count / ELEMS_PER_WORKGROUP)) }));
  const total = tensors.reduce((n, t) => n + t.partials, 0);
  const scratch = gpu.storage(total * 4, `${label}.partials`);
  let offset = 0;
  for (const t of tensors) {
    const params = gpu.uniform([['u32', t.count], ['u32', offset], ['u32', t.partials]]);
    prog.add(`${label}.partial`, partialWgsl, [t.buffer, scratch, params], t.partials);
    offset += t.partials;
  }
  prog.add(`${label}.final`, finalWgsl, [scratch, a.out, gpu.uniform([['u32', total]])], 1);
}

/** Plain-TS reference (f64 accumulation). */
export function gradSumSquaresRef(grads: ArrayLike<number>[]): number {
  let ss = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) ss += g[i]! ** 2;
  return ss;
}
