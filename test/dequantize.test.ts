// The TS dequantizers (src/gpu/dequantize.ts) against ggml's own dequantize_row_* (libggml-base via koffi), bit for
// bit, on random block bytes (every bit pattern of quants, scales and high bits) with finite f16 scales.
import { describe, expect, it } from 'vitest';
import { dequantizeRows, scaleMinK4 } from '../src/gpu/dequantize.js';
import { GgmlType, ggmlBlockSize, ggmlRowBytes, ggmlTypeName, Q4_K } from '../src/gpu/ggml-types.js';
import { randomBlocks } from './block-data.js';
import { loadGgml } from './gguf-oracles.js';

describe('dequantizers match ggml', () => {
  const ggml = loadGgml();
  for (const type of [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K]) {
    it(`${ggmlTypeName(type)}: same f32 bits as ggml's dequantize_row`, () => {
      const blocks = 37;
      const count = blocks * ggmlBlockSize(type);
      const bytes = randomBlocks(type, blocks, 1000 + type);
      expect(bytes.length).toBe(ggmlRowBytes(type, count));
      const ours = dequantizeRows(type, bytes, count);
      const theirs = ggml.dequantize(type, bytes, count);
      expect(Buffer.from(ours.buffer).equals(Buffer.from(theirs.buffer))).toBe(true);
      expect(ours.some((v) => v !== 0)).toBe(true);
    });
  }

  it('F16, BF16 and F32 decode as stored', () => {
    const bytes = new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f, 0x40, 0xc0]);
    expect([...dequantizeRows(GgmlType.F16, bytes, 4)]).toEqual([1, -2, 1.875, -2.125]);
    expect([...dequantizeRows(GgmlType.BF16, bytes, 2)]).toEqual([0.0078125, -2]);
    expect([...dequantizeRows(GgmlType.F32, new Uint8Array(new Float32Array([1.5, -3]).buffer), 2)]).toEqual([1.5, -3]);
  });

  it('unpacks the 6-bit scales and mins of Q4_K as get_scale_min_k4', () => {
    const b = new Uint8Array(Q4_K.bytes);
    // Group 5: scale 0b101101 = 45 (low nibble 13 in byte 9, top bits 2 in byte 1), min 0b110011 = 51.
    b[Q4_K.at.scales + 9] = 13 | (3 << 4);
    b[Q4_K.at.scales + 1] = 2 << 6;
    b[Q4_K.at.scales + 5] = 3 << 6;
    expect(scaleMinK4(5, b, Q4_K.at.scales)).toEqual([45, 51]);
  });
});

