import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { MAX_GRID, Program } from '../src/gpu/program.js';
import { recordAddInPlace, recordCopy, recordFill, recordScale } from '../src/kernels/elementwise.js';
import { maxAbsDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

describe('elementwise', () => {
  const count = 1237; // not a multiple of the workgroup size
  const a = randArray(count, 1, 3);
  const b = randArray(count, 2, 3);

  it('adds in place, copies, fills and scales, leaving elements past count alone', async () => {
    const sentinel = 7.5;
    const withTail = (v: Float32Array) => Float32Array.from([...v, sentinel]);
    const dst = gpu.upload(withTail(a));
    const copyDst = gpu.upload(withTail(new Float32Array(count)));
    const filled = gpu.upload(withTail(new Float32Array(count)));
    const scaled = gpu.upload(withTail(b));
    const prog = new Program(gpu);
    recordAddInPlace(prog, { dst, src: gpu.upload(b), count });
    recordCopy(prog, { src: dst, dst: copyDst, count });
    recordFill(prog, { dst: filled, count, value: -0.25 });
    recordScale(prog, { dst: scaled, count, scale: 1.5 });
    prog.run();

    const sum = a.map((v, i) => v + b[i]!);
    expect(maxAbsDiff(await gpu.readF32(dst, count + 1), withTail(sum))).toBe(0);
    expect(maxAbsDiff(await gpu.readF32(copyDst, count + 1), withTail(sum))).toBe(0);
    expect(maxAbsDiff(await gpu.readF32(filled, count + 1), withTail(new Float32Array(count).fill(-0.25)))).toBe(0);
    expect(maxAbsDiff(await gpu.readF32(scaled, count + 1), withTail(b.map((v) => v * 1.5)))).toBe(0);
  });

  it('works on a byte-range binding', async () => {
    const buf = gpu.upload(a);
    const prog = new Program(gpu);
    // Scale elements [64, 64 + 100) only: offsets must be 256-byte aligned.
    recordScale(prog, { dst: { buffer: buf, offset: 256, size: 400 }, count: 100, scale: -2 });
    prog.run();
    const want = a.map((v, i) => (i >= 64 && i < 164 ? v * -2 : v));
    expect(maxAbsDiff(await gpu.readF32(buf, count), want)).toBe(0);
  });

  it('covers counts beyond 65535 workgroups of 256 through a 2-D grid', async () => {
    const big = MAX_GRID * 256 + 300;
    const dst = gpu.storage(big * 4);
    const src = gpu.storage(big * 4);
    const prog = new Program(gpu);
    recordFill(prog, { dst, count: big, value: 1 });
    recordFill(prog, { dst: src, count: big, value: 2 });
    recordScale(prog, { dst: src, count: big, scale: 3 });
    recordAddInPlace(prog, { dst, src, count: big });
    prog.run();
    const tail = 1000;
    expect(maxAbsDiff(await gpu.readF32(dst, tail, big - tail), new Float32Array(tail).fill(7))).toBe(0);
    expect(maxAbsDiff(await gpu.readF32(dst, tail, 0), new Float32Array(tail).fill(7))).toBe(0);
    gpu.release(dst);
    gpu.release(src);
  });
});
