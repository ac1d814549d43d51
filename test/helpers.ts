// Shared test helpers: one GPU per test file (fails loudly without an adapter), seeded data, comparisons.
import { createGpu, type Gpu, type GpuOptions } from '../src/gpu/device.js';
import * as path from 'node:path';
import { seededRandom } from '../src/random.js';

/** Deterministic pseudo-random numbers in [0, 1). */
export const rng = seededRandom;

/** The reference fixtures (HF transformers + PEFT outputs) in the shared folder beside the checkout. */
export const FIXTURES = path.resolve(import.meta.dirname, '../../shared/fixtures/qwen3');

/** Devices made by testGpu in this test file: gpu-errors-setup.ts checks each of them around every test. */
export const testGpus = new Set<Gpu>();

/**
 * A WebGPU device with validation on. Throws (never skips) when no adapter exists. A WebGPU error (validation,
 * out-of-memory, internal) on it fails the test during which it happened (see gpu-errors-setup.ts).
 */
export async function testGpu(opts: GpuOptions = {}): Promise<Gpu> {
  const gpu = await createGpu({ validate: true, ...opts });
  testGpus.add(gpu);
  return gpu;
}

/** Uniform values in [-scale, scale). */
export function randArray(n: number, seed: number, scale = 1): Float32Array {
  const r = seededRandom(seed);
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
