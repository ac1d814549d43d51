import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { gemmRef, recordGemm } from '../src/kernels/gemm.js';
import { maxRelDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

describe('gemm', () => {
  // Odd shapes off the 64x64x16 tile, and LoRA-like ones: x·Aᵀ (N = rank), dA = gᵀ·x and dB = dyᵀ·h (long K).
  // 36x20x44 has every row length a multiple of 4, so all four transpositions read both operands as vec4s.
  const shapes = [
    [37, 75, 98],
    [36, 20, 44],
    [5, 3, 130],
    [70, 8, 33],
    [8, 19, 1000],
  ] as const;
  for (const [M, N, K] of shapes) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        it(`${M}x${N}x${K} transA=${transA} transB=${transB}`, async () => {
          const seed = M * 7 + N * 13 + K + (transA ? 1 : 0) + (transB ? 2 : 0);
          const A = randArray(M * K, seed);
          const B = randArray(K * N, seed + 100);
          const prior = randArray(M * N, seed + 200);
          const c = gpu.upload(randArray(M * N, seed + 300, 100));
          const cAcc = gpu.upload(prior);
          const prog = new Program(gpu);
          const a = gpu.upload(A);
          const b = gpu.upload(B);
          recordGemm(prog, { a, b, c, M, N, K, transA, transB });
          recordGemm(prog, { a, b, c: cAcc, M, N, K, transA, transB, alpha: -0.5, beta: 1 });
          prog.run();
          const opts = { transA, transB };
          expect(maxRelDiff(await gpu.readF32(c, M * N), gemmRef(A, B, undefined, M, N, K, opts))).toBeLessThan(1e-4);
          const accRef = gemmRef(A, B, prior, M, N, K, { ...opts, alpha: -0.5, beta: 1 });
          expect(maxRelDiff(await gpu.readF32(cAcc, M * N), accRef)).toBeLessThan(1e-4);
        });
      }
    }
  }

  it('reduces over 8192 tokens (LoRA factor gradients)', async () => {
    // dA = gᵀ·x: g [tokens, r], x [tokens, in].
    const [M, N, K] = [3, 5, 8192];
    const g = randArray(K * M, 1);
    const x = randArray(K * N, 2);
    const c = gpu.storage(M * N * 4);
    const prog = new Program(gpu);
    recordGemm(prog, { a: gpu.upload(g), b: gpu.upload(x), c, M, N, K, transA: true });
    prog.run();
    expect(maxRelDiff(await gpu.readF32(c, M * N), gemmRef(g, x, undefined, M, N, K, { transA: true }))).toBeLessThan(1e-4);
  });

  it('the reference transposes as documented', () => {
    // A = [[1, 2], [3, 4]] (2x2), B = [[5], [6]] (2x1): A·B = [17, 39]; Aᵀ·B = [23, 34].
    const A = new Float32Array([1, 2, 3, 4]);
    const B = new Float32Array([5, 6]);
    expect(Array.from(gemmRef(A, B, undefined, 2, 1, 2))).toEqual([17, 39]);
    expect(Array.from(gemmRef(A, B, undefined, 2, 1, 2, { transA: true }))).toEqual([23, 34]);
    expect(Array.from(gemmRef(A, B, undefined, 2, 1, 2, { transB: true }))).toEqual([17, 39]);
  });
});
