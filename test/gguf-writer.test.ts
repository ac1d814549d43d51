// The GGUF writer on its own: every metadata value type, alignment, streamed chunks, progress and the
// temp-file-then-rename behaviour, read back by @huggingface/gguf (an independent parser).
import { gguf } from '@huggingface/gguf';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GgmlType } from '../src/gpu/ggml-types.js';
import { quantizeRows } from '../src/gguf/quantize.js';
import { gv, writeGguf, type GgufValue } from '../src/gguf/writer.js';
import { randArray } from './helpers.js';
import { readGgufTensors, tempDir } from './gguf-oracles.js';

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('writeGguf', () => {
  it('writes every value type, tensors at aligned offsets, in streamed chunks with progress', async () => {
    const metadata = new Map<string, GgufValue>([
      ['general.architecture', gv.str('test')],
      ['general.alignment', gv.u32(64)],
      ['t.u8', gv.u8(250)], ['t.i8', gv.i8(-120)], ['t.u16', gv.u16(65000)], ['t.i16', gv.i16(-32000)],
      ['t.u32', gv.u32(4_000_000_000)], ['t.i32', gv.i32(-2_000_000_000)], ['t.f32', gv.f32(1.5)],
      ['t.bool', gv.bool(true)], ['t.string', gv.str('héllo ✓')],
      ['t.u64', gv.u64(2n ** 40n + 3n)], ['t.i64', gv.i64(-(2n ** 40n))], ['t.f64', gv.f64(Math.PI)],
      ['t.arr_i32', gv.array('i32', [1, -2, 3])], ['t.arr_str', gv.array('string', ['a', '', 'c d'])],
      ['t.arr_f32', gv.array('f32', [0.25, -4])], ['t.arr_bool', gv.array('bool', [true, false])],
      ['t.arr_u8', gv.array('u8', [])],
    ]);
    const a = randArray(3 * 5, 1);
    const b = randArray(2 * 64, 2);
    const path = join(dir, 'all.gguf');
    const progress: [number, number][] = [];
    await writeGguf(path, {
      metadata,
      tensors: [
        { name: 'a', ne: [5, 3], type: GgmlType.F32, data: () => quantizeRows(GgmlType.F32, a, 5) },
        // streamed as one chunk per row
        { name: 'b', ne: [64, 2], type: GgmlType.Q8_0, data: function* () { for (let r = 0; r < 2; r++) yield quantizeRows(GgmlType.Q8_0, b.subarray(r * 64, r * 64 + 64), 64); } },
      ],
      onProgress: (done, total) => progress.push([done, total]),
    });
    const parsed = await gguf(path, { allowLocalFile: true });
    const m = parsed.metadata as Record<string, unknown>;
    expect(m['t.u8']).toBe(250);
    expect(m['t.i8']).toBe(-120);
    expect(m['t.u16']).toBe(65000);
    expect(m['t.i16']).toBe(-32000);
    expect(m['t.u32']).toBe(4_000_000_000);
    expect(m['t.i32']).toBe(-2_000_000_000);
    expect(m['t.f32']).toBe(1.5);
    expect(m['t.bool']).toBe(true);
    expect(m['t.string']).toBe('héllo ✓');
    expect(m['t.u64']).toBe(2n ** 40n + 3n);
    expect(m['t.i64']).toBe(-(2n ** 40n));
    expect(m['t.f64']).toBe(Math.PI);
    expect(m['t.arr_i32']).toEqual([1, -2, 3]);
    expect(m['t.arr_str']).toEqual(['a', '', 'c d']);
    expect(m['t.arr_f32']).toEqual([0.25, -4]);
    expect(m['t.arr_bool']).toEqual([true, false]);
    expect(m['t.arr_u8']).toEqual([]);
    expect(Number(parsed.tensorDataOffset) % 64).toBe(0);
    expect(parsed.tensorInfos.map((t) => [t.name, Number(t.offset), t.shape.map(Number), Number(t.dtype)])).toEqual([
      ['a', 0, [5, 3], GgmlType.F32],
      ['b', 64, [64, 2], GgmlType.Q8_0], // 60 bytes of a, padded to 64
    ]);
    const tensors = await readGgufTensors(path);
    expect(new Float32Array(Uint8Array.from(tensors.get('a')!.bytes.subarray(0, 60)).buffer)).toEqual(a);
    expect(Uint8Array.from(tensors.get('b')!.bytes.subarray(0, 136))).toEqual(quantizeRows(GgmlType.Q8_0, b, 64));
    const total = 64 + 2 * 68 + 56;
    expect(progress.at(-1)).toEqual([total, total]);
    expect(progress.every(([d], i) => i === 0 || d >= progress[i - 1]![0])).toBe(true);
    expect(readFileSync(path).length).toBe(Number(parsed.tensorDataOffset) + total);
    expect(existsSync(`${path}.tmp`)).toBe(false);
  });

  it('fails on data of the wrong length and leaves no file behind', async () => {
    const path = join(dir, 'bad.gguf');
    await expect(writeGguf(path, {
      metadata: new Map([['general.architecture', gv.str('test')]]),
      tensors: [{ name: 'x', ne: [4], type: GgmlType.F32, data: () => new Uint8Array(12) }],
    })).rejects.toThrow(/need 16/);
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.tmp`)).toBe(false);
  });

  it('rejects values that do not fit their type', async () => {
    await expect(writeGguf(join(dir, 'range.gguf'), { metadata: new Map([['k', gv.u8(256)]]), tensors: [] })).rejects.toThrow(/out of range/);
  });
});
