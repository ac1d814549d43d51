import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program, type Dispatch } from '../src/gpu/program.js';
import { enableSubgroupsWgsl, recordRmsNorm, rmsnormRef, rowSumWgsl, type RowSumOptions } from '../src/kernels/rmsnorm.js';
import { maxAbsDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

/** Runs the kernel on rows x n; with `withResidual`, x is updated in place to x + residual. */
async function check(rows: number, n: number, withResidual: boolean, subgroups: boolean) {
  const x = randArray(rows * n, 1 + n, 3);
  const w = randArray(n, 2 + n);
  const residual = withResidual ? randArray(rows * n, 3 + n, 2) : undefined;
  const ref = rmsnormRef(x, w, rows, n, 1e-6, residual);
  const xBuf = gpu.upload(x);
  const y = gpu.storage(rows * n * 4);
  const rstd = gpu.storage(rows * 4);
  const prog = new Program(gpu);
  recordRmsNorm(prog, { x: xBuf, weight: gpu.upload(w), y, rstd, rows, n, eps: 1e-6, subgroups, residual: residual && gpu.upload(residual) });
  prog.run();
  expect(maxAbsDiff(await gpu.readF32(y, rows * n), ref.y)).toBeLessThan(1e-5);
  expect(maxAbsDiff(await gpu.readF32(rstd, rows), ref.rstd)).toBeLessThan(1e-5);
  expect(maxAbsDiff(await gpu.readF32(xBuf, rows * n), ref.sum)).toBe(0);
  return prog.steps[0] as Dispatch;
}

describe('rmsnorm', () => {
  // Layer-norm shape (odd width), per-head Q/K-norm shape (many short rows), a width over two workgroup strides.
  for (const [rows, n] of [[7, 97], [45, 16], [3, 130]] as const) {
    for (const withResidual of [false, true]) {
      it(`matches the reference on ${rows}x${n}${withResidual ? ', adding the residual in place' : ''}`, async () => {
        await check(rows, n, withResidual, false);
      });
    }
  }

  it('the reference adds the residual before normalizing', () => {
    const x = Float32Array.from([1, 2]);
    const { y, sum } = rmsnormRef(x, Float32Array.from([1, 1]), 1, 2, 0, Float32Array.from([2, 2]));
    expect(Array.from(sum)).toEqual([3, 4]);
    expect(maxAbsDiff(y, [3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)])).toBeLessThan(1e-7);
  });

  it('subgroup row sums match the reference on the same shapes (or are refused without subgroups)', async () => {
    if (!gpu.features.subgroups) {
      const b = gpu.storage(4);
      expect(() => recordRmsNorm(new Program(gpu), { x: b, weight: b, y: b, rstd: b, rows: 1, n: 1, eps: 1e-6, subgroups: true })).toThrow(/no subgroups/);
      return;
    }
    // n = 3 leaves most invocations with nothing to add; the others span one to three strides.
    for (const [rows, n] of [[7, 97], [45, 16], [3, 130], [5, 3]] as const) {
      for (const withResidual of [false, true]) {
        const sg = await check(rows, n, withResidual, true);
        const plain = await check(rows, n, withResidual, false);
        // Each variant has its own cached pipeline.
        expect(sg.pipeline).not.toBe(plain.pipeline);
        expect((await check(rows, n, withResidual, true)).pipeline).toBe(sg.pipeline);
      }
    }
  });
});

/** Each invocation contributes lid + 1 (exact in f32); returns what every invocation got from rowSum. */
async function rowSums(o: RowSumOptions): Promise<Float32Array> {
  const code = `${enableSubgroupsWgsl(o.subgroups)}
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
${rowSumWgsl(o)}
@compute @workgroup_size(${o.wg})
fn main(@builtin(local_invocation_index) lid: u32) { out[lid] = rowSum(f32(lid + 1u), lid); }`;
  const out = gpu.storage(o.wg * 4);
  const prog = new Program(gpu);
  prog.add('row-sum', code, [out], 1);
  prog.run();
  return gpu.readF32(out, o.wg);
}

function expectedRowSums(wg: number, lanes: number): number[] {
  return Array.from({ length: wg }, (_, lid) => {
    const first = lid - (lid % lanes);
    return ((first + 1 + first + lanes) * lanes) / 2;
  });
}

describe('row sum', () => {
  it('sums each group of consecutive lanes with workgroup memory', async () => {
    for (const [wg, lanes] of [[64, 64], [64, 1], [64, 4], [64, 16], [256, 256], [2, 2]] as const) {
      expect(Array.from(await rowSums({ wg, lanes, subgroups: false }))).toEqual(expectedRowSums(wg, lanes));
    }
  });

  // Workgroups smaller than the subgroup (8 on lavapipe) run partly filled subgroups; larger ones run many.
  it('sums the whole workgroup with subgroups, full or partly filled (or is refused without subgroups)', async () => {
    if (!gpu.features.subgroups) {
      const b = gpu.storage(4);
      expect(() => recordRmsNorm(new Program(gpu), { x: b, weight: b, y: b, rstd: b, rows: 1, n: 1, eps: 1e-6, subgroups: true })).toThrow(/no subgroups/);
      return;
    }
    for (const wg of [1, 3, 4, 8, 12, 64, 100, 256]) {
      expect(Array.from(await rowSums({ wg, lanes: wg, subgroups: true }))).toEqual(expectedRowSums(wg, wg));
    }
    expect(() => rowSumWgsl({ wg: 64, lanes: 8, subgroups: true })).toThrow(/whole workgroup/);
  });
});
