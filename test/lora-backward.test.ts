import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import {
  loraBackwardPlan, loraBackwardRef, loraBackwardTile, loraBackwardTileFloats, loraGradSumRef, loraLayerPartials, MAX_CHUNKS, PartialLayout,
  recordLoraBackward, recordLoraGradSum, type LoraBackwardPlan,
} from '../src/kernels/lora-backward.js';
import { gemmRef } from '../src/kernels/gemm.js';
import { maxAbsDiff, maxRelDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

const align = (floats: number) => Math.ceil(floats / 64) * 64;

describe('lora backward plan', () => {
  it('fits 16 KiB of workgroup memory at any rank and spreads 0.6B tokens over 32 chunks', () => {
    for (const r of [1, 3, 8, 16, 64, 256, 1000]) {
      const tile = loraBackwardTile(r)!;
      expect(tile.tokens).toBeGreaterThanOrEqual(1);
      expect(loraBackwardTileFloats(r, tile)).toBeLessThanOrEqual(4096);
    }
    expect(loraBackwardTile(8)).toEqual({ tokens: 64, outs: 32 });
    // Past rank 1364 not even one token row fits: no plan (the graph takes the GEMMs).
    expect(loraBackwardTile(1364)).toBeDefined();
    expect(loraBackwardTile(1365)).toBeUndefined();
    expect(loraBackwardPlan(2048, 1365, 180_224, 2 ** 31 - 4)).toBeUndefined();
    const p = loraBackwardPlan(2048, 8, 180_224, 2 ** 31 - 4)!;
    expect([p.span, p.chunks]).toEqual([64, 32]);
    // Longer inputs keep MAX_CHUNKS workgroups with longer chunks; a small binding caps the scratch.
    const long = loraBackwardPlan(4096 * 4, 8, 180_224, 2 ** 31 - 4)!;
    expect([long.span, long.chunks]).toEqual([256, MAX_CHUNKS]);
    const small = loraBackwardPlan(2048, 8, 1000, 10 * 4000)!;
    expect(small.chunks).toBeLessThanOrEqual(10);
    expect(small.chunks * small.span).toBeGreaterThanOrEqual(2048);
    // Not even one chunk's slice fits: no plan (the graph takes the GEMMs).
    expect(loraBackwardPlan(2048, 8, 1000, 3999)).toBeUndefined();
  });
});

/** One projection's LoRA backward on the GPU against the reference, and again for bitwise equality. */
async function check(N: number, outDim: number, inDim: number, r: number, plan?: LoraBackwardPlan): Promise<void> {
  const seed = N + 3 * outDim + 7 * inDim + 11 * r;
  const dy = randArray(N * outDim, seed);
  const t = randArray(N * r, seed + 1);
  const B = randArray(outDim * r, seed + 2);
  const x = randArray(N * inDim, seed + 3);
  const scale = 1.75;
  // Two gradient ranges (dA then dB) in one flat buffer, 256-aligned, with a gap after dA.
  const dAOff = 0;
  const dBOff = align(r * inDim);
  const grads = gpu.storage((dBOff + outDim * r) * 4, 'grads');
  const dA = { buffer: grads, offset: dAOff * 4, size: r * inDim * 4 };
  const dB = { buffer: grads, offset: dBOff * 4, size: outDim * r * 4 };
  const run = async () => {
    const prog = new Program(gpu);
    const partials = loraLayerPartials(prog, [dA, dB], N, r, plan)!;
    const dT = gpu.storage(N * r * 4, 'dT');
    recordLoraBackward(prog, {
      dy: gpu.upload(dy), t: gpu.upload(t), B: gpu.upload(B), x: gpu.upload(x), dT, partials, dA, dB, N, outDim, inDim, r, scale,
    });
    prog.run();
    return { partials, dT: await gpu.readF32(dT, N * r), partial: await gpu.readF32(partials.scratch) };
  };
  const first = await run();
  const { plan: used, layout } = first.partials;
  if (plan) expect(used).toEqual(plan);
  const ref = loraBackwardRef({ dy, t, B, x, N, outDim, inDim, r, scale }, used);
  expect(maxRelDiff(first.dT, ref.dT)).toBeLessThan(1e-5);
  for (let c = 0; c < used.chunks; c++) {
    const slice = first.partial.subarray(c * layout.stride, (c + 1) * layout.stride);
    expect(maxRelDiff(slice.subarray(dAOff, dAOff + r * inDim), ref.dA[c]!)).toBeLessThan(1e-5);
    expect(maxRelDiff(slice.subarray(dBOff, dBOff + outDim * r), ref.dB[c]!)).toBeLessThan(1e-5);
    // The gap between the ranges is never written.
    expect(maxAbsDiff(slice.subarray(r * inDim, dBOff), new Float32Array(dBOff - r * inDim))).toBe(0);
  }
  // The math: summed over the chunks, the reference is the plain products.
  const sum = (parts: Float32Array[]) => parts.reduce((s, p) => s.map((v, i) => v + p[i]!));
  expect(maxRelDiff(ref.dT, gemmRef(dy, B, undefined, N, r, outDim, { alpha: scale }))).toBeLessThan(1e-5);
  expect(maxRelDiff(sum(ref.dB), gemmRef(dy, t, undefined, outDim, r, N, { transA: true, alpha: scale }))).toBeLessThan(1e-5);
  expect(maxRelDiff(sum(ref.dA), gemmRef(ref.dT, x, undefined, r, inDim, N, { transA: true }))).toBeLessThan(1e-5);
  const second = await run();
  expect(maxAbsDiff(second.dT, first.dT)).toBe(0);
  expect(maxAbsDiff(second.partial, first.partial)).toBe(0);
}

describe('lora backward', () => {
  // N off the 64-token tile, out and in not multiples of 4, ranks 1, 3, 8, 16.
  for (const [N, outDim, inDim, r] of [[150, 37, 29, 1], [150, 70, 45, 3], [131, 45, 19, 8], [77, 33, 50, 16], [5, 3, 7, 8]] as const) {
    it(`N ${N}, out ${outDim}, in ${inDim}, r ${r}`, async () => {
      const { chunks } = loraBackwardPlan(N, r, 1 << 20, 1 << 30)!;
      expect(chunks).toBe(Math.ceil(N / loraBackwardTile(r)!.tokens));
      await check(N, outDim, inDim, r);
    });
  }
  it('chunks of several token tiles, the last one short', async () => {
    const tile = loraBackwardTile(3)!;
    await check(3 * 2 * tile.tokens - 5, 21, 13, 3, { tile, span: 2 * tile.tokens, chunks: 3 });
  });
  it('one chunk over every token', async () => {
    const tile = loraBackwardTile(8)!;
    await check(3 * tile.tokens + 1, 40, 33, 8, { tile, span: 4 * tile.tokens, chunks: 1 });
  });
});

describe('lora gradient sum', () => {
  it('adds Σ_c partial[c] in order into ranges that straddle two flat buffers', async () => {
    // A layer of four ranges [a0, b0 | a1, b1]: the first two end one flat buffer, the last two open the next.
    const sizes = [19, 40, 7, 33];
    const buf0 = gpu.upload(randArray(64 + align(19) + 40, 1));
    const buf1 = gpu.upload(randArray(align(7) + 33, 2));
    const ranges = [
      { buffer: buf0, offset: 64 * 4, size: 19 * 4 },
      { buffer: buf0, offset: (64 + align(19)) * 4, size: 40 * 4 },
      { buffer: buf1, offset: 0, size: 7 * 4 },
      { buffer: buf1, offset: align(7) * 4, size: 33 * 4 },
    ];
    const layout = new PartialLayout(ranges);
    expect(layout.pieces.map((p) => [p.buffer === buf0, p.gradOffset, p.partialOffset, p.count])).toEqual([
      [true, 64, 0, align(19) + 40],
      [false, 0, align(align(19) + 40), align(7) + 33],
    ]);
    expect(ranges.map((r) => layout.offsetOf(r))).toEqual([0, align(19), align(align(19) + 40), align(align(19) + 40) + align(7)]);
    const chunks = 5;
    const tile = loraBackwardTile(1)!;
    const prog = new Program(gpu);
    const partials = loraLayerPartials(prog, ranges, 5, 1, { tile, span: 1, chunks })!;
    // Partials only at the ranges' positions, as recordLoraBackward writes them.
    const partial = new Float32Array(chunks * layout.stride);
    for (let c = 0; c < chunks; c++) {
      ranges.forEach((r, k) => partial.set(randArray(sizes[k]!, 10 + c * 4 + k, 3), c * layout.stride + layout.offsetOf(r)));
    }
    gpu.write(partials.scratch, partial);
    const before = [await gpu.readF32(buf0), await gpu.readF32(buf1)];
    recordLoraGradSum(prog, partials, 'sum');
    expect(prog.steps.map((s) => s.label)).toEqual(['sum[0]', 'sum[1]']);
    prog.run();
    const want = layout.pieces.map((piece, k) => loraGradSumRef(partial, chunks, layout.stride, piece, before[k]!));
    expect(maxAbsDiff(await gpu.readF32(buf0), want[0]!)).toBe(0);
    expect(maxAbsDiff(await gpu.readF32(buf1), want[1]!)).toBe(0);
    // Outside the ranges (buf0's head, the gaps) nothing changed.
    const after0 = await gpu.readF32(buf0);
    expect(maxAbsDiff(after0.subarray(0, 64), before[0]!.subarray(0, 64))).toBe(0);
    expect(maxAbsDiff(after0.subarray(64 + 19, 64 + align(19)), before[0]!.subarray(64 + 19, 64 + align(19)))).toBe(0);
  });

  it('a layer that fits one buffer is one piece and one dispatch', () => {
    const buf = gpu.storage(4096 * 4);
    const layout = new PartialLayout([{ buffer: buf, offset: 256, size: 12 }, { buffer: buf, offset: 512, size: 100 }]);
    expect(layout.pieces).toEqual([{ buffer: buf, gradOffset: 64, partialOffset: 0, count: 64 + 25 }]);
  });
});
