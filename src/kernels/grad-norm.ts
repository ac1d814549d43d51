// Sum of squares over many gradient tensors (the square of clip_grad_norm_'s total norm), deterministic:
// each tensor's workgroups write fixed partial sums into a scratch buffer, then one workgroup adds them in a
// fixed order. No float atomics, so the same gradients always give the same bits.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';

const WG = 256;
/** Elements one workgroup should cover before another workgroup is worth adding. */
const ELEMS_PER_WORKGROUP = WG * 16;
/** Cap on partial sums per tensor, so the final single-workgroup pass stays short. */
const MAX_PARTIALS_PER_TENSOR = 64;

const partialLayout = kernelLayout({
  g: storage(),
  partials: output(),
  p: uniform({ count: 'u32', partialOffset: 'u32', numPartials: 'u32' }),
});

const partialWgsl = /* wgsl */ `
${partialLayout.wgsl}
var<workgroup> acc: array<f32, ${WG}>;

${entryWgsl(WG)} {
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

const finalLayout = kernelLayout({ partials: storage(), out: output(), p: uniform({ count: 'u32' }) });

const finalWgsl = /* wgsl */ `
${finalLayout.wgsl}
var<workgroup> acc: array<f32, ${WG}>;

${entryWgsl(WG)} {
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
    const p = { count: t.count, partialOffset: offset, numPartials: t.partials };
    partialLayout.dispatch(prog, `${label}.partial`, partialWgsl, { g: t.buffer, partials: scratch, p }, t.partials, { flops: 2 * t.count, bytes: 4 * (t.count + t.partials) });
    offset += t.partials;
  }
  finalLayout.dispatch(prog, `${label}.final`, finalWgsl, { partials: scratch, out: a.out, p: { count: total } }, 1, { flops: total, bytes: 4 * (total + 1) });
}

/** Plain-TS reference (f64 accumulation). */
export function gradSumSquaresRef(grads: ArrayLike<number>[]): number {
  let ss = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) ss += g[i]! ** 2;
  return ss;
}
