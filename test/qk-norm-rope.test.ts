import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program, type Dispatch } from '../src/gpu/program.js';
import { qkLayout, qkNormRopeRef, recordQkNormRope } from '../src/kernels/qk-norm-rope.js';
import { qkNormRopeBackwardRef, recordQkNormRopeBackward } from '../src/kernels/qk-norm-rope-backward.js';
import { rmsnormRef } from '../src/kernels/rmsnorm.js';
import { rmsnormBackwardRef } from '../src/kernels/rmsnorm-backward.js';
import { ropeRef } from '../src/kernels/rope.js';
import { maxAbsDiff, maxRelDiff, randArray, rng, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

const theta = 1e6;
const eps = 1e-6;
// Odd token and head counts (rows not a multiple of rows per workgroup); positions up to 40000.
const N = 13;
const heads = 3;
const r = rng(7);
const positions = Uint32Array.from({ length: N }, () => Math.floor(r() * 40001));
positions.set([0, 1, 40000, 32768, 12345]);

describe('qk-norm-rope layout', () => {
  it('packs short heads several to a workgroup and takes subgroups only for one row per workgroup', () => {
    expect(qkLayout(2, false)).toMatchObject({ half: 1, lanes: 1, rowsPerGroup: 64, pairsPerLane: 1, subgroups: false });
    expect(qkLayout(8, true)).toMatchObject({ half: 4, lanes: 4, rowsPerGroup: 16, pairsPerLane: 1, subgroups: false });
    expect(qkLayout(12, true)).toMatchObject({ half: 6, lanes: 8, rowsPerGroup: 8, pairsPerLane: 1, subgroups: false });
    expect(qkLayout(128, true)).toMatchObject({ half: 64, lanes: 64, rowsPerGroup: 1, pairsPerLane: 1, subgroups: true });
    expect(qkLayout(256, false)).toMatchObject({ half: 128, lanes: 64, rowsPerGroup: 1, pairsPerLane: 2, subgroups: false });
    expect(() => qkLayout(7, false)).toThrow(/even head_dim/);
  });
});

describe('qk-norm-rope references', () => {
  it('the backward reference is the rmsnorm backward of the inverse rotation', () => {
    const headDim = 12;
    const x = randArray(N * heads * headDim, 1, 2);
    const w = randArray(headDim, 2);
    const dy = randArray(N * heads * headDim, 3);
    const { rstd } = rmsnormRef(x, w, N * heads, headDim, eps);
    const dx = qkNormRopeBackwardRef(x, w, rstd, dy, positions, N, heads, headDim, theta);
    // The forward is linear in dy's direction: <dy, J dx_dir> = <dx, dir>; check against central differences.
    const dir = randArray(x.length, 4);
    const loss = (t: number) => {
      const y = qkNormRopeRef(x.map((v, i) => v + t * dir[i]!), w, positions, N, heads, headDim, theta, eps).y;
      return y.reduce((s, v, i) => s + v * dy[i]!, 0);
    };
    const h = 2 ** -10;
    const fd = (loss(h) - loss(-h)) / (2 * h);
    const analytic = dx.reduce((s, v, i) => s + v * dir[i]!, 0);
    expect(Math.abs(fd - analytic) / Math.abs(analytic)).toBeLessThan(1e-3);
    expect(maxAbsDiff(dx, rmsnormBackwardRef(x, w, rstd, ropeRef(dy, positions, N, heads, headDim, theta, true), N * heads, headDim))).toBe(0);
  });
});

async function runBoth(headDim: number, subgroups: boolean) {
  const count = N * heads * headDim;
  const x = randArray(count, headDim, 3);
  const w = randArray(headDim, headDim + 1, 1.5);
  const dy = randArray(count, headDim + 2);
  const xBuf = gpu.upload(x);
  const wBuf = gpu.upload(w);
  const posBuf = gpu.upload(positions);
  const y = gpu.storage(count * 4);
  const rstd = gpu.storage(N * heads * 4);
  const dx = gpu.upload(randArray(count, 99)); // overwritten
  const prog = new Program(gpu);
  recordQkNormRope(prog, { x: xBuf, weight: wBuf, y, rstd, positions: posBuf, N, heads, headDim, theta, eps, subgroups });
  recordQkNormRopeBackward(prog, { x: xBuf, weight: wBuf, rstd, dy: gpu.upload(dy), dx, positions: posBuf, N, heads, headDim, theta, subgroups });
  prog.run();
  const ref = qkNormRopeRef(x, w, positions, N, heads, headDim, theta, eps);
  const dxRef = qkNormRopeBackwardRef(x, w, ref.rstd, dy, positions, N, heads, headDim, theta);
  return {
    prog,
    y: maxRelDiff(await gpu.readF32(y, count), ref.y),
    rstd: maxRelDiff(await gpu.readF32(rstd, N * heads), ref.rstd),
    dx: maxRelDiff(await gpu.readF32(dx, count), dxRef),
  };
}

describe('qk-norm-rope forward and backward', () => {
  for (const headDim of [2, 8, 12, 16, 128, 256]) {
    it(`match the composed references, ${heads} heads x ${headDim}, workgroup-memory row sums`, async () => {
      const err = await runBoth(headDim, false);
      expect(err.y).toBeLessThan(2e-6);
      expect(err.rstd).toBeLessThan(1e-6);
      expect(err.dx).toBeLessThan(1e-5);
    });
  }

  it('match the references with the subgroup row sum at headDim 128 and 256 (or refuse it without subgroups)', async () => {
    if (!gpu.features.subgroups) {
      expect(() => recordQkNormRope(new Program(gpu), {
        x: gpu.storage(4), weight: gpu.storage(4), y: gpu.storage(4), rstd: gpu.storage(4), positions: gpu.storage(4),
        N: 1, heads: 1, headDim: 128, theta, eps, subgroups: true,
      })).toThrow(/no subgroups/);
      return;
    }
    for (const headDim of [128, 256]) {
      const err = await runBoth(headDim, true);
      expect(err.y).toBeLessThan(2e-6);
      expect(err.rstd).toBeLessThan(1e-6);
      expect(err.dx).toBeLessThan(1e-5);
      // The variant is its own pipeline (the cache keys by source), and a re-recording reuses it.
      const plain = (await runBoth(headDim, false)).prog.steps as Dispatch[];
      const again = (await runBoth(headDim, true)).prog.steps as Dispatch[];
      expect(again[0]!.pipeline).not.toBe(plain[0]!.pipeline);
      expect(again[0]!.pipeline).toBe(((await runBoth(headDim, true)).prog.steps[0] as Dispatch).pipeline);
    }
  });
});
