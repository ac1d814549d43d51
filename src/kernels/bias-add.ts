// Bias add over rows, in place: x[r, j] += bias[j] for x [rows, cols] (the q/k/v projection biases of Qwen2,
// added to the projection output before RoPE).
// Backward: y = x + b passes the gradient through unchanged (dx = dy), and the bias gradient (the column sums of
// dy) is never needed because base weights are frozen; so there is no backward kernel.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

const layout = kernelLayout({ x: output(), bias: storage(), p: uniform({ count: 'u32', cols: 'u32' }) });

export const biasAddWgsl = /* wgsl */ `
${layout.wgsl}
${entryWgsl(WG)} {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= p.count) { return; }
  x[i] += bias[i % p.cols];
}`;

export interface BiasAddArgs {
  /** f32 [rows, cols], updated in place. */
  x: Binding;
  /** f32 [cols]. */
  bias: Binding;
  rows: number;
  cols: number;
}

export function recordBiasAdd(prog: Program, a: BiasAddArgs, label = 'bias-add'): void {
  const count = a.rows * a.cols;
  layout.dispatch(prog, label, biasAddWgsl, { x: a.x, bias: a.bias, p: { count, cols: a.cols } }, grid(Math.ceil(count / WG)), { flops: count, bytes: 4 * (2 * count + a.cols) });
}

/** Plain-TS reference; returns a new array. */
export function biasAddRef(x: Float32Array, bias: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) out[r * cols + j] = Math.fround(x[r * cols + j]! + bias[j]!);
  return out;
}
