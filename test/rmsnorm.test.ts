import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { recordRmsNorm, rmsnormRef } from '../src/kernels/rmsnorm.js';
import { maxAbsDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

describe('rmsnorm', () => {
  // Layer-norm shape (odd width) and per-head Q/K-norm shape (many short rows).
  for (const [rows, n] of [[7, 97], [45, 16], [3, 130]] as const) {
    it(`matches the reference on ${rows}x${n}`, async () => {
      const x = randArray(rows * n, 1 + n, 3);
      const w = randArray(n, 2 + n);
      const ref = rmsnormRef(x, w, rows, n, 1e-6);
      const y = gpu.storage(rows * n * 4);
      const rstd = gpu.storage(rows * 4);
      const prog = new Program(gpu);
      recordRmsNorm(prog, { x: gpu.upload(x), weight: gpu.upload(w), y, rstd, rows, n, eps: 1e-6 });
      prog.run();
      expect(maxAbsDiff(await gpu.readF32(y, rows * n), ref.y)).toBeLessThan(1e-5);
      expect(maxAbsDiff(await gpu.readF32(rstd, rows), ref.rstd)).toBeLessThan(1e-5);
    });
  }
});
