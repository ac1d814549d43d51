import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/gpu/dtype.js';
import { matrixFromF32, rowsPerPart, type WeightDType } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { recordGemm } from '../src/kernels/gemm.js';
import { matmulInputGradRef, recordMatmulInputGrad } from '../src/kernels/matmul-input-grad.js';
import { matmulRef, recordMatmul } from '../src/kernels/matmul.js';
import { fusedProjection, fusedProjectionRef, recordFusedProjection } from './fused-projection.js';
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

// Odd shapes that are not multiples of the 64x64x16 tile; bf16 rows must have an even length. K % 4 == 0 takes
// the vec4 loads of x and W (and N % 4 == 0 those of dy in the input gradient); the others the scalar ones.
const cases: Case[] = [
  { dtype: 'f32', M: 37, N: 75, K: 98 },
  { dtype: 'f32', M: 5, N: 3, K: 131 },
  { dtype: 'f32', M: 66, N: 70, K: 17 },
  { dtype: 'f32', M: 45, N: 76, K: 100 },
  { dtype: 'bf16', M: 37, N: 75, K: 98 },
  { dtype: 'bf16', M: 5, N: 3, K: 130 },
  { dtype: 'bf16', M: 66, N: 70, K: 18 },
  { dtype: 'bf16', M: 45, N: 76, K: 100 },
];

/** The values an f16 workgroup tile holds. */
function roundF16(v: Float32Array): Float32Array {
  return v.map((x) => f16ToF32(f32ToF16(x)));
}

// LoRA ranks: 8 reads t, B and dT as vec4s, 3 element by element.
const ranks = [8, 3];
const SCALE = 0.75;

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

    for (const { dtype, M, N, K } of cases.filter((c) => c.M > 5)) {
      for (const r of ranks) {
        const seed = M * 100 + K * 10 + r;
        const x = randArray(M * K, seed);
        const wValues = randArray(N * K, seed + 1);
        const wRef = dtype === 'bf16' ? roundBf16(wValues) : wValues;

        it(`matmul ${dtype} ${M}x${N}x${K} with LoRA r=${r} and a residual equals the unfused passes`, async () => {
          const w = matrixFromF32(gpu, wValues, N, K, dtype);
          const t = randArray(M * r, seed + 2);
          const B = randArray(N * r, seed + 3);
          const residual = randArray(M * N, seed + 4);
          const [xBuf, tBuf, bBuf] = [gpu.upload(x), gpu.upload(t), gpu.upload(B)];
          const lora = { t: tBuf, B: bBuf, r, scale: SCALE };
          const yLora = gpu.upload(randArray(M * N, seed + 5, 100));
          const yBoth = gpu.upload(randArray(M * N, seed + 6, 100));
          const yUnfused = gpu.upload(residual);
          const prog = new Program(gpu);
          recordMatmul(prog, { x: xBuf, w, y: yLora, M, lora });
          recordMatmul(prog, { x: xBuf, w, y: yBoth, M, lora, residual: gpu.upload(residual) });
          // Today's three passes: y = residual; y += x·Wᵀ; y += s·t·Bᵀ.
          recordMatmul(prog, { x: xBuf, w, y: yUnfused, M, accumulate: true });
          recordGemm(prog, { a: tBuf, b: bBuf, c: yUnfused, M, N, K: r, transB: true, alpha: SCALE, beta: 1 });
          prog.run();
          const loraRef = { t, B, r, scale: SCALE };
          expect(maxRelDiff(await gpu.readF32(yLora, M * N), matmulRef(x, wRef, M, N, K, { lora: loraRef }))).toBeLessThan(TOL);
          const both = await gpu.readF32(yBoth, M * N);
          expect(maxRelDiff(both, matmulRef(x, wRef, M, N, K, { lora: loraRef, residual }))).toBeLessThan(TOL);
          expect(maxRelDiff(both, await gpu.readF32(yUnfused, M * N))).toBeLessThan(TOL);
        });

        it(`input grad ${dtype} ${M}x${N}x${K} with LoRA r=${r} equals the unfused passes`, async () => {
          const w = matrixFromF32(gpu, wValues, N, K, dtype);
          const dy = randArray(M * N, seed + 7);
          const dT = randArray(M * r, seed + 8);
          const A = randArray(r * K, seed + 9);
          const prior = randArray(M * K, seed + 10);
          const [dyBuf, dtBuf, aBuf] = [gpu.upload(dy), gpu.upload(dT), gpu.upload(A)];
          const lora = { dT: dtBuf, A: aBuf, r };
          const dx = gpu.upload(randArray(M * K, seed + 11, 100));
          const dxAcc = gpu.upload(prior);
          const dxUnfused = gpu.upload(prior);
          const prog = new Program(gpu);
          recordMatmulInputGrad(prog, { dy: dyBuf, w, dx, M, lora });
          recordMatmulInputGrad(prog, { dy: dyBuf, w, dx: dxAcc, M, lora, accumulate: true });
          recordMatmulInputGrad(prog, { dy: dyBuf, w, dx: dxUnfused, M, accumulate: true });
          recordGemm(prog, { a: dtBuf, b: aBuf, c: dxUnfused, M, N: K, K: r, beta: 1 });
          prog.run();
          const ref = matmulInputGradRef(dy, wRef, M, N, K, { dT, A, r });
          expect(maxRelDiff(await gpu.readF32(dx, M * K), ref)).toBeLessThan(TOL);
          const acc = await gpu.readF32(dxAcc, M * K);
          expect(maxRelDiff(acc, add(ref, prior))).toBeLessThan(TOL);
          expect(maxRelDiff(acc, await gpu.readF32(dxUnfused, M * K))).toBeLessThan(TOL);
        });
      }
    }

    it('row ranges with LoRA take the matching rows of B, add the residual and add dT·A once', async () => {
      const M = 9, N = 75, K = 100, r = 8;
      const [r0, r1] = [7, 68];
      const wValues = roundBf16(randArray(N * K, 21));
      const w = matrixFromF32(gpu, wValues, N, K, 'bf16');
      if (maxBindingBytes) expect(partsIn(w.parts, r0, r1)).toBeGreaterThan(2);
      const f = fusedProjection({ M, wRows: N, K, r, scale: SCALE, seed: 22, rowRange: [r0, r1] });
      const prog = new Program(gpu);
      const { y, dx } = recordFusedProjection(gpu, prog, w, f);
      prog.run();
      const ref = fusedProjectionRef(wValues, f);
      expect(maxRelDiff(await gpu.readF32(y, M * (r1 - r0)), ref.y)).toBeLessThan(TOL);
      expect(maxRelDiff(await gpu.readF32(dx, M * K), ref.dx)).toBeLessThan(TOL);
    });

    it('refuses a residual together with accumulate', () => {
      const w = matrixFromF32(gpu, randArray(6, 1), 3, 2, 'f32');
      const b = gpu.storage(64);
      expect(() => recordMatmul(new Program(gpu), { x: b, w, y: b, M: 2, residual: b, accumulate: true })).toThrow(/residual/);
    });
  });
}

/** How many weight parts hold rows of [r0, r1). */
function partsIn(parts: { rowStart: number; rows: number }[], r0: number, r1: number): number {
  return parts.filter((p) => p.rowStart < r1 && p.rowStart + p.rows > r0).length;
}

suite('weight matmul, one part', undefined);
// 768-byte bindings: 1 to 21 rows per part for the shapes above, so every weight is split.
suite('weight matmul, split in parts of a few rows', 768);

describe('weight matmul with f16 workgroup tiles', () => {
  let gpu: Gpu;
  beforeAll(async () => { gpu = await testGpu({ preferF16: true, maxBindingBytes: 4096 }); });
  afterAll(() => gpu?.destroy());

  it('takes the f16 variant exactly where the device has shader-f16', () => {
    expect(gpu.useF16).toBe(gpu.features.f16);
  });

  // Staging rounds each operand (x, W, s·t, B; dy, W, dT, A) to f16 (11 significant bits), the sums stay f32.
  const F16_TOL = 1e-2;
  for (const { dtype, M, N, K } of cases.filter((c) => c.M > 5)) {
    const seed = M + N + K;
    const wValues = randArray(N * K, seed);
    const wRef = dtype === 'bf16' ? roundBf16(wValues) : wValues;
    const f = fusedProjection({ M, wRows: N, K, r: 8, scale: SCALE, seed: seed + 1 });

    it(`${dtype} ${M}x${N}x${K}: matmul with LoRA and residual, input grad with LoRA`, async () => {
      const w = matrixFromF32(gpu, wValues, N, K, dtype);
      const prog = new Program(gpu);
      const { y, dx } = recordFusedProjection(gpu, prog, w, f);
      prog.run();
      const yGpu = await gpu.readF32(y, M * N);
      const dxGpu = await gpu.readF32(dx, M * K);
      const ref = fusedProjectionRef(wRef, f);
      expect(maxRelDiff(yGpu, ref.y)).toBeLessThan(F16_TOL);
      expect(maxRelDiff(dxGpu, ref.dx)).toBeLessThan(F16_TOL);
      // Closer still to the product of the f16-rounded operands (the conversion may round either way).
      const { x, t, B, r, residual } = f;
      const ref16 = matmulRef(roundF16(x), roundF16(wRef), M, N, K, { lora: { t: roundF16(t.map((v) => v * SCALE)), B: roundF16(B), r, scale: 1 }, residual });
      expect(maxRelDiff(yGpu, ref16)).toBeLessThan(2e-3);
    });
  }
});
