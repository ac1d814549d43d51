// Flat f32 elementwise kernels: accumulate a gradient (dst += src), copy, fill, scale. One invocation per element,
// workgroups spread over a 2-D grid so that counts above 65535 * 256 still launch.
import { entryWgsl, kernelLayout, output, storage, uniform, type KernelLayout, type LayoutDecls } from '../gpu/kernel.js';
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

const params = uniform({ count: 'u32', value: 'f32' });

/** The generated bindings, then the flattened element index `i`, returning past the end, then `body`. */
function elementwiseWgsl(layout: KernelLayout<LayoutDecls>, body: string): string {
  return /* wgsl */ `
${layout.wgsl}
${entryWgsl(WG)} {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= p.count) { return; }
  ${body}
}`;
}

const binaryLayout = kernelLayout({ src: storage(), dst: output(), p: params });
const unaryLayout = kernelLayout({ dst: output(), p: params });

export const addInPlaceWgsl = elementwiseWgsl(binaryLayout, 'dst[i] += src[i];');
export const copyWgsl = elementwiseWgsl(binaryLayout, 'dst[i] = src[i];');
export const fillWgsl = elementwiseWgsl(unaryLayout, 'dst[i] = p.value;');
export const scaleWgsl = elementwiseWgsl(unaryLayout, 'dst[i] *= p.value;');

function workgroups(count: number): [number, number, number] {
  return grid(Math.ceil(count / WG));
}

/** dst[i] += src[i] for i < count. */
export function recordAddInPlace(prog: Program, a: { dst: Binding; src: Binding; count: number }, label = 'add-in-place'): void {
  binaryLayout.dispatch(prog, label, addInPlaceWgsl, { src: a.src, dst: a.dst, p: { count: a.count, value: 0 } }, workgroups(a.count), { flops: a.count, bytes: 12 * a.count });
}

/** dst[i] = src[i] for i < count. */
export function recordCopy(prog: Program, a: { src: Binding; dst: Binding; count: number }, label = 'copy'): void {
  binaryLayout.dispatch(prog, label, copyWgsl, { src: a.src, dst: a.dst, p: { count: a.count, value: 0 } }, workgroups(a.count), { flops: 0, bytes: 8 * a.count });
}

/** dst[i] = value for i < count. */
export function recordFill(prog: Program, a: { dst: Binding; count: number; value: number }, label = 'fill'): void {
  unaryLayout.dispatch(prog, label, fillWgsl, { dst: a.dst, p: { count: a.count, value: a.value } }, workgroups(a.count), { flops: 0, bytes: 4 * a.count });
}

/** dst[i] *= scale for i < count. */
export function recordScale(prog: Program, a: { dst: Binding; count: number; scale: number }, label = 'scale'): void {
  unaryLayout.dispatch(prog, label, scaleWgsl, { dst: a.dst, p: { count: a.count, value: a.scale } }, workgroups(a.count), { flops: a.count, bytes: 8 * a.count });
}
