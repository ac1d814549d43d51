import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { dropoutAccumulateRef, dropoutMaskRef, dropoutRef, recordDropout, recordDropoutAccumulate } from '../src/kernels/dropout.js';
import { maxAbsDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

const sentinel = 7.5;
const withTail = (v: Float32Array) => Float32Array.from([...v, sentinel]);

/** Run both kernels on the GPU with [seed, step] written into the seed buffer. */
async function gpuDropout(x: Float32Array, dst: Float32Array, seed: number, step: number, salt: number, p: number): Promise<{ out: Float32Array; acc: Float32Array }> {
  const count = x.length;
  const seedBuf = gpu.upload(new Uint32Array([seed, step]));
  const xBuf = gpu.upload(x);
  const out = gpu.upload(withTail(new Float32Array(count)));
  const acc = gpu.upload(withTail(dst));
  const prog = new Program(gpu);
  recordDropout(prog, { x: xBuf, out, count, seedBuf, salt, p });
  recordDropoutAccumulate(prog, { src: xBuf, dst: acc, count, seedBuf, salt, p });
  prog.run();
  const result = { out: await gpu.readF32(out, count + 1), acc: await gpu.readF32(acc, count + 1) };
  for (const b of [seedBuf, xBuf, out, acc]) gpu.release(b);
  return result;
}

describe('dropout', () => {
  it.each([[1237, 0.1], [70001, 0.5], [513, 0]])('count %i, p %f: both kernels equal the references, elements past count untouched', async (count, p) => {
    const x = randArray(count, 1, 3);
    const dst = randArray(count, 2, 3);
    const seed = 0xdeadbeef;
    const { out, acc } = await gpuDropout(x, dst, seed, 17, 5, p);
    expect(maxAbsDiff(out, withTail(dropoutRef(x, seed, 17, 5, p)))).toBe(0);
    expect(maxAbsDiff(acc, withTail(dropoutAccumulateRef(x, dst, seed, 17, 5, p)))).toBeLessThanOrEqual(1e-6);
    const mask = dropoutMaskRef(count, seed, 17, 5, p);
    // Kept elements are scaled by 1/(1-p), dropped ones are exactly zero.
    for (let i = 0; i < count; i += 97) expect(out[i]).toBe(mask[i] ? Math.fround(x[i]! * Math.fround(1 / (1 - p))) : 0);
    if (p === 0) expect(mask.every((m) => m === 1)).toBe(true);
  });

  it.each([0.1, 0.5])('p %f: the kept fraction is within 4σ of 1 − p, over many masks and within each', (p) => {
    const count = 100_003;
    for (const [seed, step, salt] of [[42, 0, 0], [42, 1, 0], [42, 0, 1], [7, 123456, 34]] as const) {
      const kept = dropoutMaskRef(count, seed, step, salt, p).reduce((s, m) => s + m, 0);
      const sigma = Math.sqrt(count * p * (1 - p));
      expect(Math.abs(kept - count * (1 - p))).toBeLessThanOrEqual(4 * sigma);
    }
  });

  it('same inputs give the same mask; another seed, step or salt gives an independent one', async () => {
    const count = 20_011;
    const p = 0.5;
    const x = new Float32Array(count).fill(1);
    const zero = new Float32Array(count);
    const base = (await gpuDropout(x, zero, 42, 3, 9, p)).out;
    expect(maxAbsDiff((await gpuDropout(x, zero, 42, 3, 9, p)).out, base)).toBe(0);
    const keptBase = base.subarray(0, count).map((v) => (v !== 0 ? 1 : 0));
    for (const [seed, step, salt] of [[43, 3, 9], [42, 4, 9], [42, 3, 10]] as const) {
      const other = (await gpuDropout(x, zero, seed, step, salt, p)).out.subarray(0, count).map((v) => (v !== 0 ? 1 : 0));
      expect(maxAbsDiff(other, dropoutMaskRef(count, seed, step, salt, p))).toBe(0);
      // Independent masks agree on about half the elements (p² + (1-p)² = 1/2): within 4σ.
      let agree = 0;
      for (let i = 0; i < count; i++) if (other[i] === keptBase[i]) agree++;
      expect(Math.abs(agree - count / 2)).toBeLessThanOrEqual(4 * Math.sqrt(count / 4));
    }
  });

  it('rejects p outside [0, 1)', () => {
    expect(() => dropoutMaskRef(3, 0, 0, 0, 1)).toThrow(/outside/);
    expect(() => dropoutMaskRef(3, 0, 0, 0, -0.1)).toThrow(/outside/);
  });
});
