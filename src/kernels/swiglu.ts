// SwiGLU of the Qwen3 MLP: out = silu(gate) * up, and its backward. The sigmoid is formed from exp(-|g|), which
// never overflows (WGSL leaves infinities from exp indeterminate), so large |g| stays exact: silu -> g or -0.
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

const sigmoidWgsl = /* wgsl */ `
fn sigmoid(g: f32) -> f32 {
  let t = exp(-abs(g));
  return select(t, 1.0, g >= 0.0) / (1.0 + t);
}`;

const indexPrelude = /* wgsl */ `
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= p.count) { return; }`;

const entry = `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32)`;

export const swigluWgsl = /* wgsl */ `
struct Params { count: u32 }
@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${sigmoidWgsl}
${entry} {${indexPrelude}
  let g = gate[i];
  out[i] = g * sigmoid(g) * up[i];
}`;

export const swigluBackwardWgsl = /* wgsl */ `
struct Params { count: u32 }
@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read> dOut: array<f32>;
@group(0) @binding(3) var<storage, read_write> dGate: array<f32>;
@group(0) @binding(4) var<storage, read_write> dUp: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${sigmoidWgsl}
${entry} {${indexPrelude}
  let g = gate[i];
  let s = sigmoid(g);
  let d = dOut[i];
  dUp[i] = d * g * s;
  dGate[i] = d * up[i] * s * (1.0 + g * (1.0 - s));
}`;

export interface SwigluArgs {
  gate: Binding;
  up: Binding;
  out: Binding;
  count: number;
}

export interface SwigluBackwardArgs {
  gate: Binding;
  up: Binding;
  dOut: Binding;
  /** Must not alias the inputs (WebGPU forbids a writable binding overlapping another binding). */
  dGate: Binding;
  dUp: Binding;
  count: number;
}

export function recordSwiglu(prog: Program, a: SwigluArgs, label = 'swiglu'): void {
  const params = prog.gpu.uniform([['u32', a.count]]);
  prog.add(label, swigluWgsl, [a.gate, a.up, a.out, params], grid(Math.ceil(a.count / WG)));
}

export function recordSwigluBackward(prog: Program, a: SwigluBackwardArgs, label = 'swiglu-backward'): void {
  const params = prog.gpu.uniform([['u32', a.count]]);
  prog.add(label, swigluBackwardWgsl, [a.gate, a.up, a.dOut, a.dGate, a.dUp, params], grid(Math.ceil(a.count / WG)));
}

function sigmoidRef(g: number): number {
  const t = Math.exp(-Math.abs(g));
  return (g >= 0 ? 1 : t) / (1 + t);
}

/** Plain-TS reference of the forward. */
export function swigluRef(gate: Float32Array, up: Float32Array): Float32Array {
  return gate.map((g, i) => g * sigmoidRef(g) * up[i]!);
}

/** Plain-TS reference of the backward. */
export function swigluBackwardRef(gate: Float32Array, up: Float32Array, dOut: Float32Array): { dGate: Float32Array; dUp: Float32Array } {
  const dGate = new Float32Array(gate.length);
  const dUp = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    const s = sigmoidRef(g);
    dUp[i] = dOut[i]! * g * s;
    dGate[i] = dOut[i]! * up[i]! * s * (1 + g * (1 - s));
  }
  return { dGate, dUp };
}
