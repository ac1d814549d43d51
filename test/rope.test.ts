import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { recordRope, ropeInvFreq, ropeRef } from '../src/kernels/rope.js';
import { maxAbsDiff, randArray, rng, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

const theta = 1e6;

/** Largest |got - want| relative to the pair's norm, which a rotation preserves. */
function worstPairError(got: Float32Array, want: Float32Array, x: Float32Array, headDim: number): number {
  const half = headDim / 2;
  let worst = 0;
  for (let j = 0; j < x.length; j++) {
    const inFirst = j % headDim < half;
    const norm = Math.hypot(x[j]!, x[inFirst ? j + half : j - half]!);
    worst = Math.max(worst, Math.abs(got[j]! - want[j]!) / norm);
  }
  return worst;
}

describe('rope reference', () => {
  it('rotates the single pair of headDim 2 by the position in radians (inv_freq 1)', () => {
    expect(Array.from(ropeInvFreq(2, theta))).toEqual([1]);
    const out = ropeRef(Float32Array.from([1, 0, 0, 2]), Uint32Array.from([1, 3]), 2, 1, 2, theta);
    expect(maxAbsDiff(out, [Math.cos(1), Math.sin(1), -2 * Math.sin(3), 2 * Math.cos(3)])).toBeLessThan(1e-7);
  });

  it('pairs element i with i + headDim/2 within each head, with inv_freq = theta^(-2i/headDim)', () => {
    const inv = ropeInvFreq(8, 10000);
    expect(Array.from(inv)).toEqual(Array.from(Float32Array.from([1, 0.1, 0.01, 0.001])));
    const x = new Float32Array(16);
    x[8 + 1] = 1; // second head, x1 of pair 1
    const out = ropeRef(x, Uint32Array.from([5]), 1, 2, 8, 10000);
    const want = new Float32Array(16);
    want[9] = Math.cos(Math.fround(5 * inv[1]!));
    want[13] = Math.sin(Math.fround(5 * inv[1]!));
    expect(maxAbsDiff(out, want)).toBeLessThan(1e-7);
  });
});

describe('rope', () => {
  // Odd token and head counts; positions span [0, 40960) with the large ones HF reaches in long contexts.
  const N = 29;
  const r = rng(21);
  const positions = Uint32Array.from({ length: N }, () => Math.floor(r() * 40960));
  positions.set([0, 1, 32767, 32768, 40959, 12345]);

  for (const [heads, headDim] of [[3, 16], [1, 128], [5, 6]] as const) {
    it(`matches the f64 cos/sin of the f32 angle to 2e-6 at large positions, ${heads} heads x ${headDim}`, async () => {
      const x = randArray(N * heads * headDim, heads * 100 + headDim, 2);
      const buf = gpu.upload(x);
      const posBuf = gpu.upload(positions);
      const prog = new Program(gpu);
      recordRope(prog, { x: buf, positions: posBuf, N, heads, headDim, theta });
      prog.run();
      const forward = await gpu.readF32(buf, x.length);
      expect(worstPairError(forward, ropeRef(x, positions, N, heads, headDim, theta), x, headDim)).toBeLessThan(2e-6);

      // The inverse undoes the forward (the backward of a rotation is its transpose).
      const back = new Program(gpu);
      recordRope(back, { x: buf, positions: posBuf, N, heads, headDim, theta, inverse: true });
      back.run();
      const restored = await gpu.readF32(buf, x.length);
      expect(worstPairError(restored, ropeRef(forward, positions, N, heads, headDim, theta, true), x, headDim)).toBeLessThan(2e-6);
      expect(worstPairError(restored, x, x, headDim)).toBeLessThan(4e-6);
    });
  }
});
