import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { gemmPlan, gemmRef, recordGemm, reductionSplits } from '../src/kernels/gemm.js';
import { loraDownRef, recordLoraDown } from '../src/kernels/lora-down.js';
import { maxRelDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

describe('gemm', () => {
  // Odd shapes off the tiles, and LoRA-like ones: x·Aᵀ (N = rank), dA = gᵀ·x and dB = dyᵀ·h (long K).
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

  it('splits long reductions over few tiles and sums the parts in a fixed order (same bits every run)', async () => {
    // dB = s·dyᵀ·t for 300 outputs, rank 8, 2000 tokens: 3 thin tiles, so the tokens are split.
    const [M, N, K] = [300, 8, 2000];
    const plan = gemmPlan(gpu, M, N, K);
    expect(plan.splits).toBeGreaterThan(1);
    expect(reductionSplits(3, K)).toEqual({ splits: plan.splits, chunk: plan.chunk });
    const dy = randArray(K * M, 31);
    const t = randArray(K * N, 32);
    const prior = randArray(M * N, 33);
    const runs: Float32Array[] = [];
    for (let i = 0; i < 2; i++) {
      const c = gpu.upload(prior);
      const prog = new Program(gpu);
      recordGemm(prog, { a: gpu.upload(dy), b: gpu.upload(t), c, M, N, K, transA: true, alpha: 2, beta: 1 });
      prog.run();
      runs.push(await gpu.readF32(c, M * N));
    }
    expect(Buffer.from(runs[1]!.buffer).equals(Buffer.from(runs[0]!.buffer))).toBe(true);
    expect(maxRelDiff(runs[0]!, gemmRef(dy, t, prior, M, N, K, { transA: true, alpha: 2, beta: 1 }))).toBeLessThan(1e-5);
  });

  it('computes thin-row products (dA = dTᵀ·x) transposed', () => {
    expect(gemmPlan(gpu, 8, 1024, 2048).swap).toBe(true);
    expect(gemmPlan(gpu, 2048, 8, 1024).swap).toBe(false);
  });

  for (const J of [1, 2, 3]) {
    for (const [M, K, r] of [[37, 98, 8], [131, 52, 3]] as const) {
      it(`fused LoRA down-projection of ${J} factor(s), x ${M}x${K}, rank ${r}`, async () => {
        const x = randArray(M * K, J + M);
        const As = Array.from({ length: J }, (_, j) => randArray(r * K, 40 + j));
        const ts = As.map(() => gpu.upload(randArray(M * r, 50, 100)));
        const prog = new Program(gpu);
        recordLoraDown(prog, { x: gpu.upload(x), factors: As.map((A, j) => ({ A: gpu.upload(A), t: ts[j]! })), M, K, r });
        prog.run();
        const refs = loraDownRef(x, As, M, K, r);
        for (let j = 0; j < J; j++) {
          expect(maxRelDiff(await gpu.readF32(ts[j]!, M * r), refs[j]!)).toBeLessThan(1e-5);
          // The same as each product on its own through the general GEMM's reference.
          expect(maxRelDiff(refs[j]!, gemmRef(x, As[j]!, undefined, M, r, K, { transB: true }))).toBeLessThan(1e-6);
        }
      });
    }
  }

  it('the reference transposes as documented', () => {
    // A = [[1, 2], [3, 4]] (2x2), B = [[5], [6]] (2x1): A·B = [17, 39]; Aᵀ·B = [23, 34].
    const A = new Float32Array([1, 2, 3, 4]);
    const B = new Float32Array([5, 6]);
    expect(Array.from(gemmRef(A, B, undefined, 2, 1, 2))).toEqual([17, 39]);
    expect(Array.from(gemmRef(A, B, undefined, 2, 1, 2, { transA: true }))).toEqual([23, 34]);
    expect(Array.from(gemmRef(A, B, undefined, 2, 1, 2, { transB: true }))).toEqual([17, 39]);
  });
});
