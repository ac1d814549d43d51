// The matrix-unit path: packing to f16, the epilogue and the self-check that decides whether it is used.
// lavapipe has no subgroup matrices, so the product step is a plain WGSL kernel with the same contract (f16
// inputs from the packed buffers, f32 sums, run on lavapipe's shader-f16); the subgroup-matrix kernel itself
// must be refused here (its extension does not compile), and a deliberately wrong kernel must be refused too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/gpu/dtype.js';
import { matrixFromF32 } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { matmulRef, recordMatmul } from '../src/kernels/matmul.js';
import { PRODUCT_LAYOUT, subgroupMatrixProduct, type MatrixProduct } from '../src/kernels/subgroup-matrix.js';
import { entryWgsl } from '../src/gpu/kernel.js';
import { memoryTuningStore, prepareTuning, selfCheckMatrixProduct } from '../src/kernels/tune.js';
import { matrixProduct, setMatrixProduct } from '../src/kernels/tuning.js';
import { maxRelDiff, randArray, testGpu } from './helpers.js';

/** A product kernel honouring the MatrixProduct contract in plain WGSL: one output per invocation. */
function plainProduct(name: string, bIndex: string): MatrixProduct {
  return {
    name,
    blockM: 16,
    blockN: 16,
    kStep: 16,
    blocksPerWorkgroup: 1,
    wgsl: `enable f16;
${PRODUCT_LAYOUT.wgsl}
${entryWgsl(256)} {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= p.Mp * p.Np) { return; }
  let m = i / p.Np;
  let n = i % p.Np;
  var s = 0.0;
  for (var k = 0u; k < p.Kp; k++) { s += f32(a16[m * p.Kp + k]) * f32(b16[${bIndex}]); }
  c32[i] = s;
}`,
  };
}

const right = plainProduct('plain f16', 'n * p.Kp + k');
// Reads B as if it were stored [K, N]: the kind of layout slip a matrix kernel can make.
const wrong = plainProduct('plain f16, B transposed', 'k * p.Np + n');

const roundBf16 = (v: Float32Array) => v.map((x) => bf16ToF32(f32ToBf16(x)));
const roundF16 = (v: Float32Array) => v.map((x) => f16ToF32(f32ToF16(x)));

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu({ maxBindingBytes: 4096 }); });
afterAll(() => gpu?.destroy());

describe('matrix-unit path', () => {
  it('lavapipe offers no f16 subgroup matrices and has shader-f16 (the stand-in needs it)', () => {
    expect(gpu.features.subgroupMatrix).toEqual([]);
    expect(gpu.features.f16).toBe(true);
  });

  it('self-check accepts a correct product and refuses a wrong one and an uncompilable one', async () => {
    const good = await selfCheckMatrixProduct(gpu, right);
    expect(good.ok).toBe(true);
    expect(good.error).toBeGreaterThan(0);
    expect(good.error).toBeLessThan(1e-2);
    const bad = await selfCheckMatrixProduct(gpu, wrong);
    expect(bad.ok).toBe(false);
    const real = await selfCheckMatrixProduct(gpu, subgroupMatrixProduct({ M: 16, N: 16, K: 16 }, 32));
    expect(real).toEqual({ ok: false, error: Infinity });
    expect(matrixProduct(gpu)).toBeUndefined();
  });

  it('installs only a product that passed, caches the verdicts, and the key turns it off', async () => {
    const store = memoryTuningStore();
    const first = await prepareTuning(gpu, [], store, { enabled: false, matrixCandidates: [wrong, right] });
    expect(first.matrix).toBe(right.name);
    expect(matrixProduct(gpu)).toBe(right);
    const verdicts = store.load()[0]!.matrix!;
    expect(verdicts.map((v) => [v.product, v.ok])).toEqual([[wrong.name, false], [right.name, true]]);
    // Cached: a forged verdict is believed, so nothing was checked again.
    store.save([{ ...store.load()[0]!, matrix: [{ product: wrong.name, ok: true, error: 0 }] }]);
    expect((await prepareTuning(gpu, [], store, { enabled: false, matrixCandidates: [wrong, right] })).matrix).toBe(wrong.name);
    const off = await prepareTuning(gpu, [], store, { enabled: false, matrix: false, matrixCandidates: [right] });
    expect(off.matrix).toBeUndefined();
    expect(matrixProduct(gpu)).toBeUndefined();
  });

  it('packs an f32 W given in parts (one pack per part) and accumulates into y', async () => {
    // f32 W 60 x 20 is two parts of 4096-byte bindings; as f16 it packs into one (64 x 32 x 2 bytes).
    const [M, N, K] = [8, 60, 20];
    const x = randArray(M * K, 11);
    const wValues = randArray(N * K, 12);
    const prior = randArray(M * N, 13);
    const w = matrixFromF32(gpu, wValues, N, K, 'f32');
    expect(w.parts.length).toBe(2);
    const y = gpu.upload(prior);
    const prog = new Program(gpu);
    setMatrixProduct(gpu, right);
    try {
      recordMatmul(prog, { x: gpu.upload(x), w, y, M, accumulate: true });
    } finally {
      setMatrixProduct(gpu, undefined);
    }
    expect(prog.steps.map((s) => s.label).filter((l) => l.startsWith('matmul.pack_w'))).toHaveLength(2);
    prog.run();
    const ref = matmulRef(roundF16(x), roundF16(wValues), M, N, K).map((v, i) => v + prior[i]!);
    expect(maxRelDiff(await gpu.readF32(y, M * N), ref)).toBeLessThan(1e-5);
  });

  it('runs projections through pack, product and epilogue where the packed operands fit a binding', async () => {
    // 4096-byte bindings: the packed operands of W (bf16, 30 x 20) fit; a wide W, split in parts, does not and
    // stays on the tiled kernels (packing W whole needs it to fit one binding: the projections do, the
    // vocabulary matrices, split and read in row ranges, do not).
    const [M, N, K, r] = [21, 30, 20, 3];
    const x = randArray(M * K, 1);
    const wValues = randArray(N * K, 2, 0.5);
    const t = randArray(M * r, 3);
    const B = randArray(N * r, 4);
    const residual = randArray(M * N, 5);
    const w = matrixFromF32(gpu, wValues, N, K, 'bf16');
    const wideX = randArray(M * 200, 7);
    const wideW = randArray(40 * 200, 6);
    const wide = matrixFromF32(gpu, wideW, 40, 200, 'f32');
    expect(wide.parts.length).toBeGreaterThan(1);
    const y = gpu.storage(M * N * 4);
    const yWide = gpu.storage(M * 40 * 4);
    const prog = new Program(gpu);
    setMatrixProduct(gpu, right);
    try {
      recordMatmul(prog, { x: gpu.upload(x), w, y, M, lora: { t: gpu.upload(t), B: gpu.upload(B), r, scale: 0.5 }, residual: gpu.upload(residual) });
      recordMatmul(prog, { x: gpu.upload(wideX), w: wide, y: yWide, M });
    } finally {
      setMatrixProduct(gpu, undefined);
    }
    const labels = prog.steps.map((s) => s.label);
    expect(labels.filter((l) => l.endsWith('.matrix'))).toHaveLength(1);
    expect(labels.filter((l) => l.startsWith('matmul.pack_w'))).toHaveLength(1);
    expect(labels.filter((l) => /^matmul\[\d+\]$/.test(l))).toHaveLength(wide.parts.length);
    prog.run();
    expect(maxRelDiff(await gpu.readF32(yWide, M * 40), matmulRef(wideX, wideW, M, 40, 200))).toBeLessThan(1e-5);
    const got = await gpu.readF32(y, M * N);
    const wRef = roundBf16(wValues);
    const exact = matmulRef(x, wRef, M, N, K, { lora: { t, B, r, scale: 0.5 }, residual });
    expect(maxRelDiff(got, exact)).toBeLessThan(1e-2);
    // The f16 numerics: the product of the f16-rounded operands (s·t rounded after scaling), summed in f32.
    const f16Ref = matmulRef(roundF16(x), roundF16(wRef), M, N, K, { lora: { t: roundF16(t.map((v) => 0.5 * v)), B: roundF16(B), r, scale: 1 }, residual });
    expect(maxRelDiff(got, f16Ref)).toBeLessThan(1e-5);
  });
});
