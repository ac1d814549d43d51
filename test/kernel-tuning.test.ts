// Tuning: the fastest variant per shape is timed once, stored per adapter and driver, reused, redone on request,
// and off with the key.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { adapterKey, prepareTuning, TUNING_VERSION } from '../src/kernels/tune.js';
import { chooseTile, shapeKey } from '../src/kernels/tuning.js';
import { TILES } from '../src/kernels/tiled-product.js';
import { fileTuningStore } from '../src/train/tuning-cache.js';
import { testGpu } from './helpers.js';

let gpu: Gpu;
let dir: string;
beforeAll(async () => {
  gpu = await testGpu();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loraforge-tune-'));
});
afterAll(() => {
  gpu?.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('kernel tuning', () => {
  // Two small variants keep lavapipe's compile time short; the timing loop is the same for all.
  const variants = [{ tile: 't64x64' as const, f16: false }, { tile: 't128x8' as const, f16: false }];
  const shapes = [{ M: 24, N: 40, K: 32, dtype: 'bf16' as const }];

  it('times each variant once per adapter, stores the choice in the cache folder and reuses it', async () => {
    const store = fileTuningStore(dir);
    const first = await prepareTuning(gpu, shapes, store, { variants, reps: 1 });
    expect(first.tuned).toBe(true);
    const fwd = shapeKey('matmul', 24, 40, 32, 'bf16');
    const dx = shapeKey('matmul-input-grad', 24, 32, 40, 'bf16');
    expect(Object.keys(first.choices).sort()).toEqual([dx, fwd].sort());
    const file = JSON.parse(fs.readFileSync(path.join(dir, 'kernel-tuning.json'), 'utf8'));
    expect(file).toEqual([{ version: TUNING_VERSION, adapter: adapterKey(gpu), choices: first.choices }]);
    // Installed: the kernels take the stored tile for that shape.
    expect(chooseTile(gpu, 'matmul', 24, 40, 32, 'bf16')).toEqual({ ...TILES[first.choices[fwd]!.tile], f16: false });
    const again = await prepareTuning(gpu, shapes, store, { variants, reps: 1 });
    expect(again).toEqual({ ...first, tuned: false });
    expect((await prepareTuning(gpu, shapes, store, { variants, reps: 1, redo: true })).tuned).toBe(true);
  });

  it('uses the rule with the key off, and a record of another adapter is not this one', async () => {
    const store = fileTuningStore(dir);
    store.save([{ version: TUNING_VERSION, adapter: 'another|gpu', choices: { [shapeKey('matmul', 24, 40, 32, 'bf16')]: { tile: 't128x128', f16: false } } }]);
    const off = await prepareTuning(gpu, shapes, store, { enabled: false });
    expect(off).toEqual({ choices: {}, tuned: false, matrix: undefined });
    expect(chooseTile(gpu, 'matmul', 24, 40, 32, 'bf16')).toEqual({ ...TILES.t64x64, f16: false });
    const on = await prepareTuning(gpu, shapes, store, { variants, reps: 1 });
    expect(on.tuned).toBe(true);
    expect(store.load().map((r) => r.adapter).sort()).toEqual([adapterKey(gpu), 'another|gpu'].sort());
  });
});
