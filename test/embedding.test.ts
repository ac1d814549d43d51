import { afterAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { bf16ToF32, f32ToBf16 } from '../src/gpu/dtype.js';
import { matrixFromF32, type WeightDType } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { embeddingRef, recordEmbedding } from '../src/kernels/embedding.js';
import { randArray, rng, testGpu } from './helpers.js';

const gpus: Gpu[] = [];
afterAll(() => gpus.forEach((g) => g.destroy()));

async function gpuWith(maxBindingBytes?: number): Promise<Gpu> {
  const gpu = await testGpu(maxBindingBytes === undefined ? {} : { maxBindingBytes });
  gpus.push(gpu);
  return gpu;
}

const V = 37;
const H = 26; // even, as bf16 rows need
const N = 53;
const table = randArray(V * H, 5, 2);
const r = rng(6);
const ids = Uint32Array.from({ length: N }, () => Math.floor(r() * V));
ids.set([0, V - 1, V - 1, 0], 0); // the first and last rows, which sit at the ends of the first and last parts

describe('embedding', () => {
  for (const dtype of ['f32', 'bf16'] as WeightDType[]) {
    // 256-byte bindings hold a few rows each, so the table is split into many parts.
    for (const maxBindingBytes of [undefined, 256]) {
      it(`gathers ${dtype} rows${maxBindingBytes ? ' from a table split into parts' : ''}`, async () => {
        const gpu = await gpuWith(maxBindingBytes);
        const m = matrixFromF32(gpu, table, V, H, dtype, 'embed');
        if (maxBindingBytes) expect(m.parts.length).toBeGreaterThan(4);
        else expect(m.parts.length).toBe(1);
        const out = gpu.storage(N * H * 4);
        const prog = new Program(gpu);
        recordEmbedding(prog, { ids: gpu.upload(ids), table: m, out, N });
        prog.run();
        const stored = dtype === 'bf16' ? table.map((v) => bf16ToF32(f32ToBf16(v))) : table;
        expect(Array.from(await gpu.readF32(out, N * H))).toEqual(Array.from(embeddingRef(ids, stored, H)));
      });
    }
  }
});
