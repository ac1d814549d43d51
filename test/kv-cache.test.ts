// The KV cache append against its reference: odd row width, several rows, and the start moved by a uniform
// rewrite between replays of one recorded program.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { kvCacheAppendRef, recordKvCacheAppend, setKvCacheStart } from '../src/kernels/kv-cache.js';
import { randArray, testGpu } from './helpers.js';

describe('KV cache append', () => {
  let gpu: Gpu;
  beforeAll(async () => { gpu = await testGpu(); });
  afterAll(() => gpu?.destroy());

  it('writes rows start..start+T of an odd-width cache, and follows a rewritten start without re-recording', async () => {
    const maxLen = 11, width = 37, T = 3;
    let expected = randArray(maxLen * width, 1);
    const cache = gpu.upload(expected);
    const src = gpu.storage(T * width * 4);
    const prog = new Program(gpu);
    const params = recordKvCacheAppend(prog, { src, cache, T, width, start: 2 });
    const dispatches = prog.steps.length;
    for (const [i, start] of [[0, 2], [1, 8], [2, 0]] as const) {
      const rows = randArray(T * width, 10 + i);
      gpu.write(src, rows);
      setKvCacheStart(gpu, params, { T, width, start });
      prog.run();
      expected = kvCacheAppendRef(expected, rows, T, width, start);
      expect([...(await gpu.readF32(cache, maxLen * width))]).toEqual([...expected]);
    }
    expect(prog.steps.length).toBe(dispatches);
  });
});
