// Generation's KV cache append: the step's keys (or values) [T, width] go to rows start..start+T of the cache
// [maxLen, width]. `start` is a uniform the generator rewrites each token, so one recorded program serves every
// position (a buffer copy would fix its offset at record time).
//   cache[(start + t) * width + j] = src[t * width + j]   for t < T, j < width
import { entryWgsl, kernelLayout, output, storage, uniform, uniformBuffer, writeUniform } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/device.js';
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

const layout = kernelLayout({ src: storage(), cache: output(), p: uniform({ count: 'u32', dstOffset: 'u32' }) });

export const kvCacheAppendWgsl = /* wgsl */ `
${layout.wgsl}
${entryWgsl(WG)} {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= p.count) { return; }
  cache[p.dstOffset + i] = src[i];
}`;

export interface KvCacheAppendArgs {
  /** f32 [T, width]: this step's rows. */
  src: Binding;
  /** f32 [maxLen, width]. */
  cache: Binding;
  T: number;
  width: number;
  /** Row of the cache the first of the T rows goes to, as recorded (rewrite with `setKvCacheStart`). */
  start: number;
}

/** Record the append; returns its uniform buffer. */
export function recordKvCacheAppend(prog: Program, a: KvCacheAppendArgs, label = 'kv-cache'): GPUBuffer {
  const count = a.T * a.width;
  const p = uniformBuffer(prog.gpu, layout.decls.p, { count, dstOffset: a.start * a.width }, `${label}.p`);
  layout.dispatch(prog, label, kvCacheAppendWgsl, { src: a.src, cache: a.cache, p }, grid(Math.ceil(count / WG)), { flops: 0, bytes: 8 * count });
  return p;
}

/** Point a recorded append at another cache row. */
export function setKvCacheStart(gpu: Gpu, params: GPUBuffer, a: Pick<KvCacheAppendArgs, 'T' | 'width' | 'start'>): void {
  writeUniform(gpu, params, layout.decls.p, { count: a.T * a.width, dstOffset: a.start * a.width });
}

/** Plain-TS reference: the cache after the append. */
export function kvCacheAppendRef(cache: Float32Array, src: Float32Array, T: number, width: number, start: number): Float32Array {
  const out = Float32Array.from(cache);
  for (let t = 0; t < T; t++) for (let j = 0; j < width; j++) out[(start + t) * width + j] = src[t * width + j]!;
  return out;
}
