// Every tiled-product variant that tuning may choose passes the same reference checks: odd shapes with interior
// and edge tiles, bf16 weights split in parts, LoRA and residual fused, f16 staging where shader-f16 exists.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { bf16ToF32, f32ToBf16 } from '../src/gpu/dtype.js';
import { matrixFromF32 } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import { gemmRef, recordGemm } from '../src/kernels/gemm.js';
import { TILES, tileCols, tileRows, type TileName } from '../src/kernels/tiled-product.js';
import { forceTile } from '../src/kernels/tuning.js';
import { fusedProjection, fusedProjectionRef, recordFusedProjection } from './fused-projection.js';
import { maxRelDiff, randArray, testGpu } from './helpers.js';

const roundBf16 = (v: Float32Array) => v.map((x) => bf16ToF32(f32ToBf16(x)));

// 133 x 200 output: the 128-row and 128-column tiles have an interior block and edges; K = 100 has unmasked
// steps (0..95) and a masked one. 28000-byte bindings hold 140 bf16 rows of 100: W is split 140 + 60.
const [M, N, K, r] = [133, 200, 100, 8];
const SCALE = 0.5;

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu({ maxBindingBytes: 28000, preferF16: true }); });
afterAll(() => gpu?.destroy());

// f32 staging for every tile; f16 staging for one wide and one thin tile (each variant compiles slowly on
// lavapipe, and the staging code is the same for every tile).
const variants: { tile: TileName; f16: boolean }[] = [
  ...(Object.keys(TILES) as TileName[]).map((tile) => ({ tile, f16: false })),
  { tile: 't128x64', f16: true },
  { tile: 't128x8', f16: true },
];

describe('tiled-product variants', () => {
  const wValues = randArray(N * K, 1);
  const f = fusedProjection({ M, wRows: N, K, r, scale: SCALE, seed: 2 });
  const ref = fusedProjectionRef(roundBf16(wValues), f);

  for (const v of variants) {
    const name = `${v.tile}${v.f16 ? ' f16 staging' : ''} (${tileRows(TILES[v.tile])} x ${tileCols(TILES[v.tile])})`;
    it(`${name}: bf16 matmul + LoRA + residual and input grad + LoRA over two weight parts`, async () => {
      if (v.f16 && !gpu.features.f16) throw new Error('this adapter lacks shader-f16: the f16 variant cannot be checked');
      const w = matrixFromF32(gpu, wValues, N, K, 'bf16');
      expect(w.parts.map((p) => p.rows)).toEqual([140, 60]);
      const prog = new Program(gpu);
      forceTile(gpu, v);
      let out: { y: GPUBuffer; dx: GPUBuffer };
      try {
        out = recordFusedProjection(gpu, prog, w, f);
      } finally {
        forceTile(gpu, undefined);
      }
      prog.run();
      // f16 staging rounds the operands to 11 significant bits; the sums stay f32.
      const tol = v.f16 ? 1e-2 : 1e-5;
      expect(maxRelDiff(await gpu.readF32(out.y, M * N), ref.y)).toBeLessThan(tol);
      expect(maxRelDiff(await gpu.readF32(out.dx, M * K), ref.dx)).toBeLessThan(tol);
    });
  }

  for (const tile of Object.keys(TILES) as TileName[]) {
    it(`${tile}: f32 GEMM Aᵀ·B with beta 1, odd shape`, async () => {
      const [gm, gn, gk] = [133, 131, 50];
      const a = randArray(gk * gm, 11);
      const b = randArray(gk * gn, 12);
      const prior = randArray(gm * gn, 13);
      const c = gpu.upload(prior);
      const prog = new Program(gpu);
      forceTile(gpu, { tile, f16: false });
      try {
        recordGemm(prog, { a: gpu.upload(a), b: gpu.upload(b), c, M: gm, N: gn, K: gk, transA: true, alpha: 0.5, beta: 1 });
      } finally {
        forceTile(gpu, undefined);
      }
      prog.run();
      const ref = gemmRef(a, b, prior, gm, gn, gk, { transA: true, alpha: 0.5, beta: 1 });
      expect(maxRelDiff(await gpu.readF32(c, gm * gn), ref)).toBeLessThan(1e-5);
    });
  }
});
