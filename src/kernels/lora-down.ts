// The LoRA down-projections of the projections that read the same input, in one pass over it:
// t_j[M, r] = x[M, K] · A_jᵀ for j < J (J ≤ 3: q/k/v read h1, gate/up read h2), A_j [r, K] f32.
// One thin tiled product over the stacked factors: output column n is factor j = n / r, row n mod r, so x is
// read once for all J products and the output tile is J·r wide instead of r padded to a 64-wide tile.
import { kernelLayout, output, storage, uniform, type LayoutDecls } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';
import { quadAligned, tiledProductWgsl, tiledProductWorkgroups, wgslQuadArray, wgslRowQuad, type TileConfig } from './tiled-product.js';
import { chooseTile } from './tuning.js';

/** Most factors one pass stacks (q, k and v). */
export const MAX_STACKED = 3;

function loraDownLayout(J: number, vecK: boolean) {
  const decls: LayoutDecls = { x: storage(wgslQuadArray('f32', vecK)) };
  for (let j = 0; j < J; j++) decls[`a${j}`] = storage(wgslQuadArray('f32', vecK));
  for (let j = 0; j < J; j++) decls[`t${j}`] = output();
  decls.p = uniform({ M: 'u32', N: 'u32', K: 'u32', r: 'u32' });
  return kernelLayout(decls);
}

function loraDownWgsl(J: number, vecK: boolean, tile: TileConfig): string {
  const factor = (j: number) => wgslRowQuad(`quadA${j}`, `a${j}`, 'f32', { rows: 'p.r', cols: 'p.K', stride: 'p.K', base: '0u' }, vecK);
  // B(n, k) = A_{n / r}(n mod r, k): a chain of selects on n, uniform across a quad (all four values share n).
  const pickFactor = (suffix: string) => Array.from({ length: J }, (_, j) => j === J - 1
    ? `return quadA${j}${suffix}(n - ${j}u * p.r, k);`
    : `if (n < ${j + 1}u * p.r) { return quadA${j}${suffix}(n - ${j}u * p.r, k); }`).join('\n  ');
  const stores = Array.from({ length: J }, (_, j) => j === J - 1
    ? `t${j}[m * p.r + n - ${j}u * p.r] = v;`
    : `if (n < ${j + 1}u * p.r) { t${j}[m * p.r + n - ${j}u * p.r] = v; return; }`).join('\n  ');
  return tiledProductWgsl({
    aRun: 'k',
    bRun: 'k',
    fastDepth: 'p.K',
    tile,
    declarations: `
${loraDownLayout(J, vecK).wgsl}
${wgslRowQuad('quadX', 'x', 'f32', { rows: 'p.M', cols: 'p.K', stride: 'p.K', base: '0u' }, vecK)}
${Array.from({ length: J }, (_, j) => factor(j)).join('\n')}
fn loadA4(m: u32, k: u32) -> vec4<f32> { return quadX(m, k); }
fn loadA4Fast(m: u32, k: u32) -> vec4<f32> { return quadXFast(m, k); }
fn loadB4(n: u32, k: u32) -> vec4<f32> {
  ${pickFactor('')}
}
fn loadB4Fast(n: u32, k: u32) -> vec4<f32> {
  ${pickFactor('Fast')}
}
fn storeC(m: u32, n: u32, v: f32) {
  ${stores}
}`,
  });
}

export interface LoraDownArgs {
  /** [M, K]: the projections' common input. */
  x: Binding;
  /** Per projection: its A [r, K] and its t [M, r] (written). */
  factors: { A: Binding; t: Binding }[];
  M: number;
  K: number;
  r: number;
}

/** Append t_j = x · A_jᵀ for every factor, in one dispatch. */
export function recordLoraDown(prog: Program, a: LoraDownArgs, label = 'lora-down'): void {
  const J = a.factors.length;
  if (J < 1 || J > MAX_STACKED) throw new Error(`recordLoraDown: 1 to ${MAX_STACKED} factors, got ${J}`);
  if (a.M === 0) return;
  const N = J * a.r;
  const tile = chooseTile(prog.gpu, 'gemm', a.M, N, a.K, 'f32');
  const args: Record<string, Binding | Record<string, number>> = { x: a.x, p: { M: a.M, N, K: a.K, r: a.r } };
  a.factors.forEach((f, j) => { args[`a${j}`] = f.A; args[`t${j}`] = f.t; });
  const cost = { flops: 2 * a.M * N * a.K, bytes: 4 * (a.M * a.K + N * a.K + a.M * N) };
  const vecK = quadAligned(a.K);
  loraDownLayout(J, vecK).dispatch(prog, label, loraDownWgsl(J, vecK, tile), args, tiledProductWorkgroups(tile, a.M, N), cost);
}

/** Plain-TS reference: t_j[m, c] = Σ_k x[m, k] · A_j[c, k], each [M, r]. */
export function loraDownRef(x: Float32Array, As: Float32Array[], M: number, K: number, r: number): Float32Array[] {
  return As.map((A) => {
    const t = new Float32Array(M * r);
    for (let m = 0; m < M; m++) {
      for (let c = 0; c < r; c++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x[m * K + k]! * A[c * K + k]!;
        t[m * r + c] = s;
      }
    }
    return t;
  });
}
