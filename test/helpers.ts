// Shared test helpers: one GPU per test file (fails loudly without an adapter), seeded data, comparisons.
import { createGpu, type Gpu, type GpuOptions } from '../src/gpu/device.js';

/** A WebGPU device with validation on. Throws (never skips) when no adapter exists. */
export async function testGpu(opts: GpuOptions = {}): Promise<Gpu> {
  return createGpu({ validate: true, ...opts });
}

/** Deterministic pseudo-random numbers (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform values in [-scale, scale). */
export function randArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** max|a-b| / max|b|. */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ref = 0;
  for (let i = 0; i < b.length; i++) ref = Math.max(ref, Math.abs(b[i]!));
  return maxAbsDiff(a, b) / (ref || 1);
}
