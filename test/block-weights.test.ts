// Weights kept in ggml block formats (and f16) on the GPU: the projection matmul, its input gradient, a row range
// across parts (the lm_head's vocabulary chunks) and the embedding lookup read them through the generated
// accessors, and so does the training cross-entropy's finish (its W[target] rows); each equals the f32 reference on
// the same weights dequantized by dequantize.ts (checked bit for bit
// against ggml in dequantize.test.ts). Odd M and N; small bindings split the matrices into several parts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { dequantizeRows } from '../src/gpu/dequantize.js';
import { ggmlBlockSize, ggmlRowBytes } from '../src/gpu/ggml-types.js';
import { ggmlTypeOfDType, matrixFromBytes, rowsPerPart, type MatrixDType } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { crossEntropyHiddenRef, recordCrossEntropy } from '../src/kernels/cross-entropy.js';
import { embeddingRef, recordEmbedding } from '../src/kernels/embedding.js';
import { matmulInputGradRef, recordMatmulInputGrad } from '../src/kernels/matmul-input-grad.js';
import { matmulRef, recordMatmul } from '../src/kernels/matmul.js';
import { randomBlocks } from './block-data.js';
import { maxRelDiff, randArray, rng, testGpu } from './helpers.js';

const TOL = 1e-4;

/** A [rows, cols] weight in `dtype`: its bytes (random blocks, or f16 of random values) and what they hold. */
function weight(dtype: MatrixDType, rows: number, cols: number, seed: number): { bytes: Uint8Array; values: Float32Array } {
  const type = ggmlTypeOfDType(dtype);
  let bytes: Uint8Array;
  if (dtype === 'f16') {
    const r = rng(seed);
    const h = Uint16Array.from({ length: rows * cols }, () => Math.floor(r() * 0x2000) + (r() < 0.5 ? 0x2000 : 0xa000));
    bytes = new Uint8Array(h.buffer);
  } else {
    bytes = randomBlocks(type, (rows * cols) / ggmlBlockSize(type), seed, 0.05);
  }
  expect(bytes.length).toBe(rows * ggmlRowBytes(type, cols));
  return { bytes, values: dequantizeRows(type, bytes, rows * cols) };
}

// Row lengths: whole blocks (two 256-blocks for the K-quants, three 32-blocks otherwise; f16 not a multiple of 4).
const cases: { dtype: MatrixDType; K: number }[] = [
  { dtype: 'q8_0', K: 96 }, { dtype: 'q4_0', K: 96 }, { dtype: 'q5_0', K: 96 }, { dtype: 'q5_1', K: 96 }, { dtype: 'q4_k', K: 512 }, { dtype: 'q5_k', K: 512 },
  { dtype: 'q6_k', K: 512 }, { dtype: 'f16', K: 98 },
];
const M = 19;
const N = 37;

function suite(name: string, split: boolean) {
  describe(name, () => {
    let gpu: Gpu;
    // 512-byte bindings: one row of the K-quants, several of the others, so every matrix has several parts.
    beforeAll(async () => { gpu = await testGpu(split ? { maxBindingBytes: 512 } : {}); });
    afterAll(() => gpu?.destroy());

    for (const { dtype, K } of cases) {
      const seed = K + dtype.length * 7 + dtype.charCodeAt(1);
      it(`${dtype} [${N}, ${K}]: matmul, input gradient and a row range equal the f32 reference`, async () => {
        const { bytes, values } = weight(dtype, N, K, seed);
        const w = matrixFromBytes(gpu, bytes, N, K, dtype, 'w');
        if (split) expect(w.parts.length).toBeGreaterThan(2);
        else expect(w.parts.length).toBe(1);
        const x = randArray(M * K, seed + 1);
        const dy = randArray(M * N, seed + 2);
        const y = gpu.storage(M * N * 4);
        const dx = gpu.storage(M * K * 4);
        const [r0, r1] = [5, 31];
        const yRange = gpu.storage(M * (r1 - r0) * 4);
        const dyRange = randArray(M * (r1 - r0), seed + 3);
        const dxRange = gpu.storage(M * K * 4);
        if (split) {
          const per = rowsPerPart(gpu, K, dtype);
          expect(Math.floor(r0 / per)).toBeLessThan(Math.floor((r1 - 1) / per));
        }
        const prog = new Program(gpu);
        recordMatmul(prog, { x: gpu.upload(x), w, y, M });
        recordMatmulInputGrad(prog, { dy: gpu.upload(dy), w, dx, M });
        recordMatmul(prog, { x: gpu.upload(x), w, y: yRange, M, rowRange: [r0, r1] });
        recordMatmulInputGrad(prog, { dy: gpu.upload(dyRange), w, dx: dxRange, M, rowRange: [r0, r1] });
        prog.run();
        const wRange = values.subarray(r0 * K, r1 * K);
        expect(maxRelDiff(await gpu.readF32(y, M * N), matmulRef(x, values, M, N, K))).toBeLessThan(TOL);
        expect(maxRelDiff(await gpu.readF32(dx, M * K), matmulInputGradRef(dy, values, M, N, K))).toBeLessThan(TOL);
        expect(maxRelDiff(await gpu.readF32(yRange, M * (r1 - r0)), matmulRef(x, wRange, M, r1 - r0, K))).toBeLessThan(TOL);
        expect(maxRelDiff(await gpu.readF32(dxRange, M * K), matmulInputGradRef(dyRange, wRange, M, r1 - r0, K))).toBeLessThan(TOL);
      });

      it(`${dtype} [${N}, ${K}]: the embedding lookup gives the dequantized rows exactly`, async () => {
        const { bytes, values } = weight(dtype, N, K, seed + 10);
        const table = matrixFromBytes(gpu, bytes, N, K, dtype, 'embed');
        const r = rng(seed);
        const ids = Uint32Array.from({ length: 23 }, () => Math.floor(r() * N));
        ids.set([0, N - 1], 0);
        const out = gpu.storage(ids.length * K * 4);
        const prog = new Program(gpu);
        recordEmbedding(prog, { ids: gpu.upload(ids), table, out, N: ids.length });
        prog.run();
        const got = await gpu.readF32(out, ids.length * K);
        const ref = embeddingRef(ids, values, K);
        // One product per value on both sides (two with a min): equal up to a fused multiply-add's rounding.
        expect(maxRelDiff(got, ref)).toBeLessThan(1e-6);
      });

      it(`${dtype} [${N}, ${K}] as the lm head: the one-pass cross-entropy's loss and dHidden equal the f32 reference`, async () => {
        const { bytes, values } = weight(dtype, N, K, seed + 20);
        const lmHead = matrixFromBytes(gpu, bytes, N, K, dtype, 'lm_head');
        const r = rng(seed + 21);
        // Targets in every part, the last vocab row, and rows not counted (−100, past the vocabulary).
        const targets = Int32Array.from({ length: M }, () => Math.floor(r() * N));
        targets.set([N - 1, 0, -100, N + 1], 0);
        const hidden = randArray(M * K, seed + 22, 4);
        const invCount = 1 / targets.filter((t) => t >= 0 && t < N).length;
        const loss = gpu.storage(4);
        const dHidden = gpu.storage(M * K * 4);
        const prog = new Program(gpu);
        recordCrossEntropy(prog, {
          hidden: gpu.upload(hidden), lmHead, targets: gpu.upload(targets), N: M, invCount: gpu.upload(new Float32Array([invCount])),
          // 6 vocab rows of 19 tokens fit the 512-byte bindings.
          loss, dHidden, chunk: split ? 6 : 16,
        });
        prog.run();
        const ref = crossEntropyHiddenRef(hidden, values, targets, M, N, K, invCount);
        expect(Math.abs((await gpu.readF32(loss, 1))[0]! - ref.loss) / ref.loss).toBeLessThan(TOL);
        expect(maxRelDiff(await gpu.readF32(dHidden, M * K), ref.dHidden)).toBeLessThan(TOL);
      });
    }
  });
}

suite('block-format weights', false);
suite('block-format weights split into parts', true);
