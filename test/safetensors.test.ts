import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/gpu/dtype.js';
import { Checkpoint, SafetensorsStreamWriter, writeSafetensors, type TensorToWrite } from '../src/model/safetensors.js';
import { randArray, FIXTURES } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'safetensors-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A header + data built by hand, for malformed files the writer would never produce. */
function rawFile(header: unknown, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  return out;
}

function writeRaw(name: string, bytes: Uint8Array): string {
  const path = join(tmp, name);
  writeFileSync(path, bytes);
  return path;
}

/** Opening the file gives a UserError whose message contains `fragment`. */
function expectBad(path: string, fragment: RegExp): void {
  let err: unknown;
  try {
    Checkpoint.open(path).close();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  expect((err as Error).message).toMatch(fragment);
  expect((err as Error).message).toContain(path);
}

describe('safetensors round trip', () => {
  it('writes and reads back every dtype, with metadata and an 8-byte aligned header', () => {
    const f = randArray(30, 1, 5);
    const tensors: TensorToWrite[] = [
      { name: 'f64', dtype: 'F64', shape: [5, 6], data: Float64Array.from(f) },
      { name: 'f32', dtype: 'F32', shape: [3, 10], data: f },
      { name: 'f16', dtype: 'F16', shape: [30], data: Uint16Array.from(f, f32ToF16) },
      { name: 'bf16', dtype: 'BF16', shape: [2, 3, 5], data: Uint16Array.from(f, f32ToBf16) },
      { name: 'i64', dtype: 'I64', shape: [3], data: BigInt64Array.from([-5n, 0n, 1n << 40n]) },
      { name: 'i32', dtype: 'I32', shape: [3], data: Int32Array.from([-100, 7, 2 ** 30]) },
      { name: 'i16', dtype: 'I16', shape: [2], data: Int16Array.from([-32768, 32767]) },
      { name: 'i8', dtype: 'I8', shape: [3], data: Int8Array.from([-128, 0, 127]) },
      { name: 'u8', dtype: 'U8', shape: [1, 3], data: Uint8Array.from([0, 200, 255]) },
      { name: 'bool', dtype: 'BOOL', shape: [2], data: Uint8Array.from([1, 0]) },
      { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      { name: 'scalar', dtype: 'F32', shape: [], data: Float32Array.of(2.5) },
    ];
    const path = join(tmp, 'all.safetensors');
    writeSafetensors(path, tensors, { format: 'pt', note: 'hello' });
    expect(existsSync(`${path}.tmp`)).toBe(false);
    const bytes = readFileSync(path);
    expect(Number(bytes.readBigUInt64LE(0)) % 8).toBe(0);

    const ckpt = Checkpoint.open(path);
    try {
      expect(ckpt.metadata).toEqual({ format: 'pt', note: 'hello' });
      expect([...ckpt.tensors.keys()].sort()).toEqual(tensors.map((t) => t.name).sort());
      for (const t of tensors) {
        const info = ckpt.tensors.get(t.name)!;
        expect(info.dtype).toBe(t.dtype);
        expect(info.shape).toEqual(t.shape);
        const raw = ckpt.readBytes(t.name);
        expect(Buffer.from(raw)).toEqual(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      }
      // Tensors are laid out in the given order.
      const starts = tensors.map((t) => ckpt.tensors.get(t.name)!.start);
      expect(starts).toEqual([...starts].sort((a, b) => a - b));
      expect(ckpt.readF32('f64')).toEqual(Float32Array.from(f));
      expect(ckpt.readF32('f32')).toEqual(f);
      expect(ckpt.readF32('f16')).toEqual(Float32Array.from(f, (x) => f16ToF32(f32ToF16(x))));
      expect(ckpt.readF32('bf16')).toEqual(Float32Array.from(f, (x) => bf16ToF32(f32ToBf16(x))));
      expect([...ckpt.readF32('i64')]).toEqual([-5, 0, 2 ** 40]);
      expect([...ckpt.readF32('i32')]).toEqual([-100, 7, 2 ** 30]);
      expect([...ckpt.readF32('i16')]).toEqual([-32768, 32767]);
      expect([...ckpt.readF32('i8')]).toEqual([-128, 0, 127]);
      expect([...ckpt.readF32('u8')]).toEqual([0, 200, 255]);
      expect([...ckpt.readF32('bool')]).toEqual([1, 0]);
      expect(ckpt.readF32('empty').length).toBe(0);
      expect([...ckpt.readF32('scalar')]).toEqual([2.5]);
      // Partial reads: rows 1..2 of the f32 [3, 10] tensor.
      expect(new Float32Array(ckpt.readBytes('f32', 40, 80).buffer)).toEqual(f.subarray(10, 30));
      expect(() => ckpt.readBytes('f32', 100, 40)).toThrow(RangeError);
      expect(() => ckpt.readBytes('nope')).toThrow(UserError);
    } finally {
      ckpt.close();
    }
  });

  it('leaves nothing that looks valid when writing fails', () => {
    const path = join(tmp, 'failed.safetensors');
    expect(() => writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [3], data: new Float32Array(2) }])).toThrow(/expected 12/);
    const w = new SafetensorsStreamWriter(path, [{ name: 'a', dtype: 'F32', shape: [4] }]);
    w.write(new Float32Array(2));
    expect(() => w.finish()).toThrow(/8 bytes of tensor data written, header describes 16/);
    expect(readdirSync(tmp).filter((f) => f.startsWith('failed'))).toEqual([]);
  });

  it('opens a sharded folder through its index', () => {
    const dir = join(tmp, 'sharded');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const a = randArray(12, 2);
    const b = randArray(7, 3);
    const c = randArray(5, 4);
    writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), [
      { name: 'x.a', dtype: 'F32', shape: [3, 4], data: a },
      { name: 'x.b', dtype: 'F32', shape: [7], data: b },
    ], { format: 'pt' });
    writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), [{ name: 'y.c', dtype: 'F32', shape: [5], data: c }]);
    const index = {
      metadata: { total_size: 96 },
      weight_map: { 'x.a': 'model-00001-of-00002.safetensors', 'x.b': 'model-00001-of-00002.safetensors', 'y.c': 'model-00002-of-00002.safetensors' },
    };
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    const ckpt = Checkpoint.open(dir);
    try {
      expect([...ckpt.tensors.keys()].sort()).toEqual(['x.a', 'x.b', 'y.c']);
      expect(ckpt.tensors.get('y.c')!.file).toBe(join(dir, 'model-00002-of-00002.safetensors'));
      expect(ckpt.readF32('x.a')).toEqual(a);
      expect(ckpt.readF32('x.b')).toEqual(b);
      expect(ckpt.readF32('y.c')).toEqual(c);
      expect(ckpt.metadata.total_size).toBe('96');
    } finally {
      ckpt.close();
    }

    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...index.weight_map, 'z.d': 'model-00003-of-00003.safetensors' } }));
    expectBad(dir, /shard model-00003-of-00003.safetensors .*is missing/);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...index.weight_map, 'z.d': 'model-00002-of-00002.safetensors' } }));
    expectBad(dir, /"z.d" is mapped to model-00002-of-00002.safetensors but that shard does not contain it/);
  });

  it('opens the fixture checkpoints with the expected shapes', () => {
    for (const [name, vocab, hidden, qDim, inter, tied] of [['tiny-tied', 512, 64, 64, 160, true], ['small-untied', 1000, 96, 192, 256, false]] as const) {
      const model = Checkpoint.open(join(FIXTURES, name, 'model'));
      try {
        expect(model.tensors.get('model.embed_tokens.weight')!.shape).toEqual([vocab, hidden]);
        expect(model.tensors.get('model.layers.0.self_attn.q_proj.weight')!.shape).toEqual([qDim, hidden]);
        expect(model.tensors.get('model.layers.1.mlp.down_proj.weight')!.shape).toEqual([hidden, inter]);
        expect(model.tensors.has('lm_head.weight')).toBe(!tied);
        expect(model.readF32('model.norm.weight').length).toBe(hidden);
      } finally {
        model.close();
      }
      const kase = Checkpoint.open(join(FIXTURES, name, 'case.safetensors'));
      try {
        const ids = kase.tensors.get('input_ids')!;
        expect(ids.dtype).toBe('I32');
        const [b, t] = ids.shape as [number, number];
        expect(kase.tensors.get('base_logits')!.shape).toEqual([b, t, vocab]);
        const tokens = kase.readF32('input_ids');
        expect(tokens.every((x) => Number.isInteger(x) && x >= 0 && x < vocab)).toBe(true);
      } finally {
        kase.close();
      }
    }
  });
});


describe('safetensors validation', () => {
  const f32 = (shape: number[], offsets: unknown) => ({ dtype: 'F32', shape, data_offsets: offsets });
  const cases: [string, Uint8Array, RegExp][] = [
    ['short', Uint8Array.of(1, 2, 3), /shorter than the 8-byte header length/],
    ['absurd', (() => { const b = new Uint8Array(16); new DataView(b.buffer).setBigUint64(0, 1n << 40n, true); return b; })(), /header length .* is absurd/],
    ['beyond', (() => { const b = new Uint8Array(16); new DataView(b.buffer).setBigUint64(0, 100n, true); return b; })(), /header length 100 goes beyond the file size 16/],
    ['badjson', rawFile('{"a": ', 0), /not valid JSON/],
    ['array', rawFile('[1, 2]', 0), /not a JSON object/],
    ['dtype', rawFile({ a: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, 1), /"a": unknown dtype "F8"/],
    ['size', rawFile({ a: f32([2, 3], [0, 20]) }, 24), /needs 24 bytes but data_offsets \[0, 20\] hold 20/],
    ['outside', rawFile({ a: f32([2], [0, 8]) }, 4), /go beyond the 4 data bytes/],
    ['overlap', rawFile({ a: f32([2], [0, 8]), b: f32([2], [4, 12]) }, 12), /tensors "a" and "b" overlap/],
    ['negative', rawFile({ a: f32([-1, 4], [0, 0]) }, 0), /not a non-negative integer/],
    ['fraction', rawFile({ a: f32([1.5], [0, 6]) }, 8), /not a non-negative integer/],
    ['offsets', rawFile({ a: f32([1], [4]) }, 8), /is not a pair of non-negative integers/],
    ['metadata', rawFile({ __metadata__: { n: 3 } }, 0), /__metadata__.n is not a string/],
  ];
  for (const [name, bytes, message] of cases) {
    it(`refuses a file with ${name === 'short' ? 'fewer than 8 bytes' : `a bad header (${name})`}`, () => {
      expectBad(writeRaw(`${name}.safetensors`, bytes), message);
    });
  }

  it('refuses a folder without a checkpoint', () => {
    const dir = join(tmp, 'emptydir');
    mkdirSync(dir, { recursive: true });
    expectBad(dir, /neither model.safetensors nor model.safetensors.index.json/);
  });
});

describe('safetensors fuzzing', () => {
  const valid = (() => {
    const path = join(tmp, 'valid.safetensors');
    writeSafetensors(path, [
      { name: 'w', dtype: 'BF16', shape: [3, 4], data: new Uint16Array(12) },
      { name: 'v', dtype: 'F32', shape: [5], data: randArray(5, 9) },
      { name: 'i', dtype: 'I64', shape: [2], data: new BigInt64Array(2) },
    ], { format: 'pt' });
    return readFileSync(path);
  })();

  /** Opening and reading every tensor either works or throws a UserError, nothing else. */
  function openAndReadAll(bytes: Uint8Array, name: string): void {
    const path = writeRaw(name, bytes);
    let ckpt: Checkpoint;
    try {
      ckpt = Checkpoint.open(path);
    } catch (e) {
      expect(e).toBeInstanceOf(UserError);
      return;
    }
    try {
      for (const t of ckpt.tensors.values()) {
        expect(t.start + t.byteLength).toBeLessThanOrEqual(bytes.byteLength);
        expect(ckpt.readF32(t.name).length).toBe(t.shape.reduce((a, b) => a * b, 1));
      }
    } finally {
      ckpt.close();
    }
  }

  it('random truncation gives a UserError', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: valid.byteLength - 1 }), (length) => {
      expect(() => Checkpoint.open(writeRaw('trunc.safetensors', valid.subarray(0, length)))).toThrow(UserError);
    }), { numRuns: 200 });
  });

  it('random byte flips never give anything but a UserError or a readable file', () => {
    fc.assert(fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: valid.byteLength - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
      (flips) => {
        const bytes = Uint8Array.from(valid);
        for (const [at, value] of flips) bytes[at] = value;
        openAndReadAll(bytes, 'flip.safetensors');
      },
    ), { numRuns: 300 });
  });

  it('random header JSON never gives anything but a UserError or a readable file', () => {
    const entry = fc.record({
      dtype: fc.oneof(fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'U8', 'BOOL', 'F8', 'f32'), fc.anything()),
      shape: fc.oneof(fc.array(fc.integer({ min: -2, max: 6 }), { maxLength: 3 }), fc.anything()),
      data_offsets: fc.oneof(fc.tuple(fc.integer({ min: -4, max: 80 }), fc.integer({ min: -4, max: 80 })), fc.anything()),
    }, { requiredKeys: [] });
    const header = fc.dictionary(fc.oneof(fc.string(), fc.constant('__metadata__')), fc.oneof(entry, fc.anything()), { maxKeys: 4 });
    fc.assert(fc.property(header, fc.integer({ min: 0, max: 64 }), (h, dataBytes) => {
      openAndReadAll(rawFile(h, dataBytes), 'json.safetensors');
    }), { numRuns: 400 });
  });
});
