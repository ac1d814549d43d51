// Flat f32 elementwise kernels: accumulate a gradient (dst += src), copy, fill, scale. One invocation per element,
// workgroups spread over a 2-D grid so that counts above 65535 * 256 still launch.
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

/** WGSL prelude: Params { count, value } and the flattened element index `i`, returning past the end. */
function elementwiseWgsl(bindings: string, body: string): string {
  return /* wgsl */ `
struct Params { count: u32, value: f32 }
${bindings}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= p.count) { return; }
  ${body}
}`;
}

export const addInPlaceWgsl = elementwiseWgsl(
  `@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;`,
  'dst[i] += src[i];',
);

export const copyWgsl = elementwiseWgsl(
  `@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;`,
  'dst[i] = src[i];',
);

export const fillWgsl = elementwiseWgsl(
  `@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;`,
  'dst[i] = p.value;',
);

export const scaleWgsl = elementwiseWgsl(
  `@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;`,
  'dst[i] *= p.value;',
);

function params(prog: Program, count: number, value = 0): GPUBuffer {
  return prog.gpu.uniform([['u32', count], ['f32', value]]);
}

function workgroups(count: number): [number, number, number] {
  return grid(Math.ceil(count / WG));
}

/** dst[i] += src[i] for i < count. */
export function recordAddInPlace(prog: Program, a: { dst: Binding; src: Binding; count: number }, label = 'add-in-place'): void {
  prog.add(label, addInPlaceWgsl, [a.dst, a.src, params(prog, a.count)], workgroups(a.count));
}

/** dst[i] = src[i] for i < count. */
export function recordCopy(prog: Program, a: { src: Binding; dst: Binding; count: number }, label = 'copy'): void {
  prog.add(label, copyWgsl, [a.src, a.dst, params(prog, a.count)], workgroups(a.count));
}

/** dst[i] = value for i < count. */
export function recordFill(prog: Program, a: { dst: Binding; count: number; value: number }, label = 'fill'): void {
  prog.add(label, fillWgsl, [a.dst, params(prog, a.count, a.value)], workgroups(a.count));
}

/** dst[i] *= scale for i < count. */
export function recordScale(prog: Program, a: { dst: Binding; count: number; scale: number }, label = 'scale'): void {
  prog.add(label, scaleWgsl, [a.dst, params(prog, a.count, a.scale)], workgroups(a.count));
}
