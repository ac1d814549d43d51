import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { recordRmsNormBackward, rmsnormBackwardRef } from '../src/kernels/rmsnorm-backward.js';
import { rmsnormRef } from '../src/kernels/rmsnorm.js';
import { maxAbsDiff, maxRelDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

const eps = 1e-6;

describe('rmsnorm backward reference', () => {
  it('matches central differences of rmsnormRef', () => {
    const rows = 3;
    const n = 11;
    const x = randArray(rows * n, 1, 2);
    const w = randArray(n, 2);
    const dy = randArray(rows * n, 3);
    const dx = rmsnormBackwardRef(x, w, rmsnormRef(x, w, rows, n, eps).rstd, dy, rows, n);
    // L = sum(dy * y); dL/dx_j by central differences, one coordinate at a time.
    const loss = (xs: Float32Array) => rmsnormRef(xs, w, rows, n, eps).y.reduce((s, v, i) => s + v * dy[i]!, 0);
    const h = 2 ** -9;
    const fd = new Float32Array(rows * n);
    for (let j = 0; j < rows * n; j++) {
      const plus = x.slice();
      const minus = x.slice();
      plus[j] = plus[j]! + h;
      minus[j] = minus[j]! - h;
      fd[j] = (loss(plus) - loss(minus)) / (2 * h);
    }
    expect(maxRelDiff(dx, fd)).toBeLessThan(1e-3);
  });
});

async function check(rows: number, n: number, accumulate: boolean, subgroups: boolean): Promise<void> {
  const x = randArray(rows * n, 1 + n, 3);
  const w = randArray(n, 2 + n);
  const dy = randArray(rows * n, 3 + n);
  const prior = randArray(rows * n, 4 + n);
  const { rstd } = rmsnormRef(x, w, rows, n, eps);
  const ref = rmsnormBackwardRef(x, w, rstd, dy, rows, n);
  const want = accumulate ? ref.map((v, i) => v + prior[i]!) : ref;
  const dx = gpu.upload(prior);
  const prog = new Program(gpu);
  recordRmsNormBackward(prog, { x: gpu.upload(x), weight: gpu.upload(w), rstd: gpu.upload(rstd), dy: gpu.upload(dy), dx, rows, n, accumulate, subgroups });
  prog.run();
  expect(maxAbsDiff(await gpu.readF32(dx, rows * n), want)).toBeLessThan(1e-5);
}

describe('rmsnorm backward', () => {
  // Layer-norm shapes (odd widths) and the per-head Q/K-norm shape (many short rows).
  const shapes = [[7, 97], [45, 16], [3, 130]] as const;
  for (const [rows, n] of shapes) {
    for (const accumulate of [false, true]) {
      it(`matches the reference on ${rows}x${n}${accumulate ? ', accumulating' : ''}`, async () => {
        await check(rows, n, accumulate, false);
      });
    }
  }

  it('subgroup row sums match the reference on the same shapes (or are refused without subgroups)', async () => {
    if (!gpu.features.subgroups) {
      const b = gpu.storage(4);
      expect(() => recordRmsNormBackward(new Program(gpu), { x: b, weight: b, rstd: b, dy: b, dx: b, rows: 1, n: 1, subgroups: true })).toThrow(/no subgroups/);
      return;
    }
    for (const [rows, n] of [...shapes, [5, 3]] as const) {
      for (const accumulate of [false, true]) await check(rows, n, accumulate, true);
    }
  });
});
