// SwiGLU of the Qwen3 MLP: out = silu(gate) * up, and its backward. The sigmoid is formed from exp(-|g|), which
// never overflows (WGSL leaves infinities from exp indeterminate), so large |g| stays exact: silu -> g or -0.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
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

const params = uniform({ count: 'u32' });
const forwardLayout = kernelLayout({ gate: storage(), up: storage(), out: output(), p: params });
const backwardLayout = kernelLayout({ gate: storage(), up: storage(), dOut: storage(), dGate: output(), dUp: output(), p: params });

export const swigluWgsl = /* wgsl */ `
${forwardLayout.wgsl}
${sigmoidWgsl}
${entryWgsl(WG)} {${indexPrelude}
  let g = gate[i];
  out[i] = g * sigmoid(g) * up[i];
}`;

export const swigluBackwardWgsl = /* wgsl */ `
${backwardLayout.wgsl}
${sigmoidWgsl}
${entryWgsl(WG)} {${indexPrelude}
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
  // Per element: silu(g) = g / (1 + exp(−g)) (4) times up; gate and up read, out written.
  forwardLayout.dispatch(prog, label, swigluWgsl, { gate: a.gate, up: a.up, out: a.out, p: { count: a.count } }, grid(Math.ceil(a.count / WG)), { flops: 5 * a.count, bytes: 12 * a.count });
}

export function recordSwigluBackward(prog: Program, a: SwigluBackwardArgs, label = 'swiglu-backward'): void {
  const bindings = { gate: a.gate, up: a.up, dOut: a.dOut, dGate: a.dGate, dUp: a.dUp, p: { count: a.count } };
  // Per element: the sigmoid (3), silu and its derivative (4), both gradients (3); gate, up, dOut read, dGate, dUp written.
  backwardLayout.dispatch(prog, label, swigluBackwardWgsl, bindings, grid(Math.ceil(a.count / WG)), { flops: 10 * a.count, bytes: 20 * a.count });
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
