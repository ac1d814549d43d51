import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { entryWgsl, kernelLayout, output, packUniform, storage, uniform, uniformBuffer, writeUniform } from '../src/gpu/kernel.js';
import { Program } from '../src/gpu/program.js';
import { testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

describe('kernel layout', () => {
  it('generates the uniform struct and one binding line per present declaration, in declaration order', () => {
    const layout = kernelLayout({
      x: storage(),
      w: storage('array<u32>'),
      skipped: undefined,
      y: output(),
      p: uniform({ rows: 'u32', shift: 'i32', eps: 'f32' }),
    });
    expect(layout.wgsl).toBe(
      [
        'struct Params { rows: u32, shift: i32, eps: f32 }',
        '@group(0) @binding(0) var<storage, read> x: array<f32>;',
        '@group(0) @binding(1) var<storage, read> w: array<u32>;',
        '@group(0) @binding(2) var<storage, read_write> y: array<f32>;',
        '@group(0) @binding(3) var<uniform> p: Params;',
      ].join('\n'),
    );
  });

  it('packs uniform fields by name in declaration order, padded to 16 bytes', () => {
    const decl = uniform({ rows: 'u32', shift: 'i32', eps: 'f32', n: 'u32', m: 'u32' });
    const bytes = packUniform(decl, { m: 9, eps: 0.5, n: 4000000000, shift: -3, rows: 7 });
    expect(bytes.byteLength).toBe(32);
    const d = new DataView(bytes);
    expect([d.getUint32(0, true), d.getInt32(4, true), d.getFloat32(8, true), d.getUint32(12, true), d.getUint32(16, true)])
      .toEqual([7, -3, 0.5, 4000000000, 9]);
  });

  it('rejects a missing, unknown or out-of-range uniform value', () => {
    const decl = uniform({ rows: 'u32', shift: 'i32' });
    expect(() => packUniform(decl, { rows: 1 } as never)).toThrow(/Params.shift: no value/);
    expect(() => packUniform(decl, { rows: 1, shift: 0, extra: 2 } as never)).toThrow(/no field extra/);
    expect(() => packUniform(decl, { rows: -1, shift: 0 })).toThrow(/Params.rows: -1 is not a u32/);
    expect(() => packUniform(decl, { rows: 1.5, shift: 0 })).toThrow(/is not a u32/);
    expect(() => packUniform(decl, { rows: 1, shift: 2 ** 31 })).toThrow(/is not a i32/);
  });

  it('rejects two uniform bindings with the same struct name', () => {
    expect(() => kernelLayout({ a: uniform({ x: 'u32' }), b: uniform({ y: 'u32' }) })).toThrow(/struct Params/);
  });

  it('binds by name on the GPU: values become a uniform buffer, or a given uniform buffer is bound and rewritten', async () => {
    const params = uniform({ count: 'u32', scale: 'f32', offset: 'i32' });
    const layout = kernelLayout({ dst: output(), src: storage(), p: params });
    const code = `${layout.wgsl}
${entryWgsl(64)} {
  let i = wid.x * 64u + lid;
  if (i >= p.count) { return; }
  dst[i] = src[i] * p.scale + f32(p.offset);
}`;
    const count = 70;
    const src = gpu.upload(Float32Array.from({ length: count + 1 }, (_, i) => i));
    const dst = gpu.upload(new Float32Array(count + 1).fill(-1));
    const prog = new Program(gpu);
    layout.dispatch(prog, 'direct', code, { src, dst, p: { count, scale: 2, offset: -3 } }, 2);
    prog.run();
    const direct = await gpu.readF32(dst);
    expect(direct[5]).toBe(5 * 2 - 3);
    expect(direct[count - 1]).toBe((count - 1) * 2 - 3);
    expect(direct[count]).toBe(-1);

    const buf = uniformBuffer(gpu, params, { count: 3, scale: 1, offset: 0 });
    const replay = new Program(gpu);
    layout.dispatch(replay, 'given-buffer', code, { src, dst: { buffer: dst, offset: 0, size: 8 * 4 }, p: buf }, 1);
    writeUniform(gpu, buf, params, { count: 8, scale: 0.5, offset: 10 });
    replay.run();
    const rewritten = await gpu.readF32(dst);
    expect(Array.from(rewritten.subarray(0, 9))).toEqual([10, 10.5, 11, 11.5, 12, 12.5, 13, 13.5, 8 * 2 - 3]); // element 8 keeps the first run's value
  });

  it('names the binding a launcher forgot or added', () => {
    const layout = kernelLayout({ dst: output(), extra: undefined, p: uniform({ count: 'u32' }) });
    const dst = gpu.storage(16);
    expect(() => layout.bindings(gpu, { p: { count: 1 } } as never, 'k')).toThrow(/k: binding dst not given/);
    expect(() => layout.bindings(gpu, { dst, p: { count: 1 }, extra: dst } as never, 'k')).toThrow(/k: no binding named extra/);
    expect(() => layout.bindings(gpu, { dst, p: { count: 1 }, typo: dst } as never, 'k')).toThrow(/no binding named typo/);
  });
});
