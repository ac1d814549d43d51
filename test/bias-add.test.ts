import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { biasAddRef, recordBiasAdd } from '../src/kernels/bias-add.js';
import { randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

describe('bias add', () => {
  it('reference: adds the bias to every row', () => {
    expect([...biasAddRef(Float32Array.from([1, 2, 3, 4, 5, 6]), Float32Array.from([10, 20, 30]), 2, 3)]).toEqual([11, 22, 33, 14, 25, 36]);
  });

  // Odd shapes: rows·cols not a multiple of the workgroup, cols not a power of two.
  for (const [rows, cols] of [[37, 45], [1, 7], [129, 20]] as const) {
    it(`equals the reference exactly on [${rows}, ${cols}]`, async () => {
      const x = randArray(rows * cols, rows + cols, 3);
      const bias = randArray(cols, 2 * cols + 1, 1);
      const xBuf = gpu.upload(x);
      const prog = new Program(gpu);
      recordBiasAdd(prog, { x: xBuf, bias: gpu.upload(bias), rows, cols });
      prog.run();
      expect(await gpu.readF32(xBuf, rows * cols)).toEqual(biasAddRef(x, bias, rows, cols));
    });
  }
});
