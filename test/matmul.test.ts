import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { bf16ToF32, f32ToBf16 } from '../src/gpu/dtype.js';
import { matrixFromF32, rowsPerPart, type WeightDType } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { matmulInputGradRef, recordMatmulInputGrad } from '../src/kernels/matmul-input-grad.js';
import { matmulRef, recordMatmul } from '../src/kernels/matmul.js';
import { maxRelDiff, randArray, testGpu } from './helpers.js';

const TOL = 1e-4;

/** The values a bf16 upload actually holds. */
function roundBf16(v: Float32Array): Float32Array {
  return v.map((x) => bf16ToF32(f32ToBf16(x)));
}

/** Columns [c0, c1) of a row-major [rows, cols] array. */
function columns(a: Float32Array, rows: number, cols: number, c0: number, c1: number): Float32Array {
  const out = new Float32Array(rows * (c1 - c0));
  for (let r = 0; r < rows; r++) out.set(a.subarray(r * cols + c0, r * cols + c1), r * (c1 - c0));
  return out;
}

const add = (a: Float32Array, b: Float32Array) => a.map((v, i) => v + b[i]!);

interface Case {
  dtype: WeightDType;
  M: number;
  N: number;
  K: number;
}

// Odd shapes that are not multiples of the 64x64x16 tile; bf16 rows must have an even length.
const cases: Case[] = [
  { dtype: 'f32', M: 37, N: 75, K: 98 },
  { dtype: 'f32', M: 5, N: 3, K: 131 },
  { dtype: 'f32', M: 66, N: 70, K: 17 },
  { dtype: 'bf16', M: 37, N: 75, K: 98 },
  { dtype: 'bf16', M: 5, N: 3, K: 130 },
  { dtype: 'bf16', M: 66, N: 70, K: 18 },
];

function suite(name: string, maxBindingBytes: number | undefined) {
  describe(name, () => {
    let gpu: Gpu;
    beforeAll(async () => { gpu = await testGpu(maxBindingBytes ? { maxBindingBytes } : {}); });
    afterAll(() => gpu?.destroy());

    for (const { dtype, M, N, K } of cases) {
      const seed = M * 1000 + N * 10 + K;
      const x = randArray(M * K, seed);
      const wValues = randArray(N * K, seed + 1);
      const wRef = dtype === 'bf16' ? roundBf16(wValues) : wValues;

      it(`matmul ${dtype} ${M}x${N}x${K} writes and accumulates`, async () => {
        const w = matrixFromF32(gpu, wValues, N, K, dtype);
        if (maxBindingBytes) expect(w.parts.length).toBeGreaterThan(1);
        const prior = randArray(M * N, seed + 2);
        const y = gpu.upload(randArray(M * N, seed + 3, 100));
        const yAcc = gpu.upload(prior);
        const prog = new Program(gpu);
        recordMatmul(prog, { x: gpu.upload(x), w, y, M });
        recordMatmul(prog, { x: gpu.upload(x), w, y: yAcc, M, accumulate: true });
        prog.run();
        const ref = matmulRef(x, wRef, M, N, K);
        expect(maxRelDiff(await gpu.readF32(y, M * N), ref)).toBeLessThan(TOL);
        expect(maxRelDiff(await gpu.readF32(yAcc, M * N), add(ref, prior))).toBeLessThan(TOL);
      });

      it(`input grad ${dtype} ${M}x${N}x${K} writes and accumulates`, async () => {
        const w = matrixFromF32(gpu, wValues, N, K, dtype);
        const dy = randArray(M * N, seed + 4);
        const prior = randArray(M * K, seed + 5);
        const dx = gpu.upload(randArray(M * K, seed + 6, 100));
        const dxAcc = gpu.upload(prior);
        const prog = new Program(gpu);
        recordMatmulInputGrad(prog, { dy: gpu.upload(dy), w, dx, M });
        recordMatmulInputGrad(prog, { dy: gpu.upload(dy), w, dx: dxAcc, M, accumulate: true });
        prog.run();
        const ref = matmulInputGradRef(dy, wRef, M, N, K);
        expect(maxRelDiff(await gpu.readF32(dx, M * K), ref)).toBeLessThan(TOL);
        expect(maxRelDiff(await gpu.readF32(dxAcc, M * K), add(ref, prior))).toBeLessThan(TOL);
      });
    }

    it('row ranges (vocabulary chunks) select W rows and write only their columns', async () => {
      const M = 9, N = 75, K = 98;
      const [r0, r1] = [7, 68];
      const x = randArray(M * K, 11);
      const wValues = roundBf16(randArray(N * K, 12));
      const w = matrixFromF32(gpu, wValues, N, K, 'bf16');
      if (maxBindingBytes) {
        // The range must start and end in different parts.
        const per = rowsPerPart(gpu, K, 'bf16');
        expect(Math.floor(r0 / per)).toBeLessThan(Math.floor((r1 - 1) / per));
      }
      const wRange = wValues.subarray(r0 * K, r1 * K);
      const y = gpu.storage(M * (r1 - r0) * 4);
      const dy = randArray(M * (r1 - r0), 13);
      const dxPrior = randArray(M * K, 14);
      const dx = gpu.upload(dxPrior);
      const prog = new Program(gpu);
      recordMatmul(prog, { x: gpu.upload(x), w, y, M, rowRange: [r0, r1] });
      recordMatmulInputGrad(prog, { dy: gpu.upload(dy), w, dx, M, rowRange: [r0, r1], accumulate: true });
      prog.run();
      const yRef = matmulRef(x, wRange, M, r1 - r0, K);
      expect(maxRelDiff(await gpu.readF32(y, M * (r1 - r0)), yRef)).toBeLessThan(TOL);
      // Same as the full product restricted to those columns.
      expect(maxRelDiff(yRef, columns(matmulRef(x, wValues, M, N, K), M, N, r0, r1))).toBeLessThan(1e-6);
      const dxRef = add(matmulInputGradRef(dy, wRange, M, r1 - r0, K), dxPrior);
      expect(maxRelDiff(await gpu.readF32(dx, M * K), dxRef)).toBeLessThan(TOL);
    });
  });
}

suite('weight matmul, one part', undefined);
// 768-byte bindings: 1 to 21 rows per part for the shapes above, so every weight is split.
suite('weight matmul, split in parts of a few rows', 768);
