// Inverted dropout whose mask is a pure function of (seed, step, salt, element index): out = x·mask/(1−p), or
// dst += src·mask/(1−p). Nothing is stored: the backward and gradient-checkpointing recomputation regenerate the
// same mask from the same inputs. seed and step come from a small GPU buffer written before each run (so one
// recorded program serves every micro-batch); the salt is fixed at record time and separates the masks of
// different call sites.
//
// The hash is PCG's output permutation used as an integer hash (Jarzynski & Olano, "Hash Functions for GPU
// Rendering", JCGT 2020): a bijection on u32, chained over the inputs. An element is kept iff hash/2^32 >= p.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

const PCG_WGSL = /* wgsl */ `
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}`;

/** The same permutation in TS (u32 in, u32 out). */
function pcg(v: number): number {
  const state = (Math.imul(v, 747796405) + 2891336453) >>> 0;
  const word = Math.imul((state >>> ((state >>> 28) + 4)) ^ state, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** Per-call-site key: every element's hash mixes it with the element index. */
function dropoutKey(seed: number, step: number, salt: number): number {
  return pcg((pcg((pcg(seed >>> 0) ^ step) >>> 0) ^ salt) >>> 0);
}

/** Smallest hash that is kept: hash >= threshold ⟺ hash/2^32 >= p. */
function keepThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout probability ${p} is outside [0, 1)`);
  return Math.min(2 ** 32 - 1, Math.ceil(p * 2 ** 32));
}

// One layout for both directions: `src` is x (or the gradient to accumulate), `dst` is out (or dx).
const layout = kernelLayout({
  src: storage(),
  dst: output(),
  seedStep: storage('array<u32>'),
  p: uniform({ count: 'u32', salt: 'u32', threshold: 'u32', scale: 'f32' }),
});

function dropoutWgsl(accumulate: boolean): string {
  return /* wgsl */ `
${layout.wgsl}
${PCG_WGSL}
${entryWgsl(WG)} {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= p.count) { return; }
  let key = pcg(pcg(pcg(seedStep[0]) ^ seedStep[1]) ^ p.salt);
  let kept = pcg(pcg(i) ^ key) >= p.threshold;
  let v = select(0.0, src[i] * p.scale, kept);
  ${accumulate ? 'dst[i] += v;' : 'dst[i] = v;'}
}`;
}

export interface DropoutMaskArgs {
  count: number;
  /** u32[2]: [seed, step], read when the program runs. */
  seedBuf: Binding;
  /** Fixed per call site, so that each site has its own mask. */
  salt: number;
  /** Probability of dropping an element, in [0, 1). */
  p: number;
}

function record(prog: Program, label: string, accumulate: boolean, src: Binding, dst: Binding, a: DropoutMaskArgs): void {
  const p = { count: a.count, salt: a.salt >>> 0, threshold: keepThreshold(a.p), scale: 1 / (1 - a.p) };
  // Per element: the hash (about 8 integer operations) and the scale (and the add when accumulating).
  const cost = { flops: (accumulate ? 10 : 9) * a.count, bytes: 4 * (accumulate ? 3 : 2) * a.count };
  layout.dispatch(prog, label, dropoutWgsl(accumulate), { src, dst, seedStep: a.seedBuf, p }, grid(Math.ceil(a.count / WG)), cost);
}

/** out = x·mask/(1−p) for the first `count` elements. */
export function recordDropout(prog: Program, a: DropoutMaskArgs & { x: Binding; out: Binding }, label = 'dropout'): void {
  record(prog, label, false, a.x, a.out, a);
}

/** dst += src·mask/(1−p) for the first `count` elements (the backward of recordDropout with the same mask). */
export function recordDropoutAccumulate(prog: Program, a: DropoutMaskArgs & { src: Binding; dst: Binding }, label = 'dropout-accumulate'): void {
  record(prog, label, true, a.src, a.dst, a);
}

/** Reference mask: 1 where element i is kept. */
export function dropoutMaskRef(count: number, seed: number, step: number, salt: number, p: number): Uint8Array {
  const key = dropoutKey(seed, step, salt);
  const threshold = keepThreshold(p);
  const mask = new Uint8Array(count);
  for (let i = 0; i < count; i++) mask[i] = pcg((pcg(i) ^ key) >>> 0) >= threshold ? 1 : 0;
  return mask;
}

/** Plain-TS reference of recordDropout (f32 products, as the kernel). */
export function dropoutRef(x: Float32Array, seed: number, step: number, salt: number, p: number): Float32Array {
  const mask = dropoutMaskRef(x.length, seed, step, salt, p);
  const scale = Math.fround(1 / (1 - p));
  return x.map((v, i) => (mask[i] ? v * scale : 0));
}

/** Plain-TS reference of recordDropoutAccumulate: the new dst. */
export function dropoutAccumulateRef(src: Float32Array, dst: Float32Array, seed: number, step: number, salt: number, p: number): Float32Array {
  const dropped = dropoutRef(src, seed, step, salt, p);
  return dst.map((v, i) => v + dropped[i]!);
}
