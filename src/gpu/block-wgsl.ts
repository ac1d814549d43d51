// WGSL accessors that dequantize ggml blocks in registers, generated from the block layouts of ggml-types.ts:
// the offsets and sizes come from the declarations, the decoding is dequantize.ts's (the plain-TS reference)
// four elements at a time. Weights in block formats are bound as array<u32> of the tensor's raw bytes; a
// row of a matrix is a whole number of blocks, so element e of the matrix is element e % n of block e / n.
//
// A quad e..e+3 (e a multiple of 4) never crosses a block or a scale group (groups are 16 or 32 elements), so it
// needs one scale, one min, and one 4-byte run of quants (read as one or two words where blocks are not
// word-aligned: Q8_0's 34 bytes, Q4_0's 18, Q6_K's 210). Values are f32(q) times the f16 scales as ggml does.
import { GgmlType, Q4_0, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, blockLayout } from './ggml-types.js';

/**
 * The ggml types kept in their blocks on the GPU: those of llama.cpp's q8_0, q4_0 and K-quant files, and Q5_0 /
 * Q5_1, which llama-quantize puts where a K-quant's 256 does not divide the row length.
 */
export type GpuBlockType = GgmlType.Q8_0 | GgmlType.Q4_0 | GgmlType.Q5_0 | GgmlType.Q5_1 | GgmlType.Q4_K | GgmlType.Q5_K | GgmlType.Q6_K;

export const GPU_BLOCK_TYPES: readonly GpuBlockType[] = [
  GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
];

/** Byte readers over `array` (array<u32>), named with the accessor's prefix so several can share a shader. */
function byteReaders(p: string, array: string): string {
  return `fn ${p}_u8(at: u32) -> u32 { return (${array}[at >> 2u] >> ((at & 3u) * 8u)) & 0xffu; }
fn ${p}_f16(at: u32) -> f32 { return unpack2x16float(${array}[at >> 2u] >> ((at & 2u) * 8u)).x; }
fn ${p}_u8x4(at: u32) -> u32 {
  let s = (at & 3u) * 8u;
  let lo = ${array}[at >> 2u];
  if (s == 0u) { return lo; }
  return (lo >> s) | (${array}[(at >> 2u) + 1u] << (32u - s));
}
fn ${p}_nibbles(w: u32, high: bool) -> vec4<f32> {
  let v = select(w, w >> 4u, high) & 0x0f0f0f0fu;
  return vec4<f32>(vec4<u32>(v & 0xffu, (v >> 8u) & 0xffu, (v >> 16u) & 0xffu, v >> 24u));
}`;
}

/** The body of `fn name(e: u32) -> vec4<f32>` per type; `block` is the block's byte offset, `i` e's place in it. */
function quadBody(type: GpuBlockType, p: string): string {
  switch (type) {
    case GgmlType.Q8_0:
      return `let w = ${p}_u8x4(block + ${Q8_0.at.qs}u + i);
  let q = vec4<i32>(bitcast<i32>(w << 24u), bitcast<i32>(w << 16u), bitcast<i32>(w << 8u), bitcast<i32>(w)) >> vec4<u32>(24u);
  return vec4<f32>(q) * ${p}_f16(block + ${Q8_0.at.d}u);`;
    case GgmlType.Q4_0:
      // Element j < 16 is the low nibble of qs[j], j >= 16 the high nibble of qs[j - 16].
      return `let w = ${p}_u8x4(block + ${Q4_0.at.qs}u + (i & 15u));
  return (${p}_nibbles(w, i >= 16u) - 8.0) * ${p}_f16(block + ${Q4_0.at.d}u);`;
    case GgmlType.Q5_0:
    case GgmlType.Q5_1: {
      // Nibbles as Q4_0; the fifth bit of element i is bit i of qh. Q5_0: d (q - 16); Q5_1: d q + m.
      const L = type === GgmlType.Q5_0 ? Q5_0 : Q5_1;
      const value = type === GgmlType.Q5_0 ? `(q - 16.0) * ${p}_f16(block + ${Q5_0.at.d}u)` : `q * ${p}_f16(block + ${Q5_1.at.d}u) + ${p}_f16(block + ${Q5_1.at.m}u)`;
      return `let qh = (${p}_u8x4(block + ${L.at.qh}u) >> i) & 0xfu;
  let q = ${p}_nibbles(${p}_u8x4(block + ${L.at.qs}u + (i & 15u)), i >= 16u) + 16.0 * vec4<f32>(vec4<u32>(qh & 1u, (qh >> 1u) & 1u, (qh >> 2u) & 1u, qh >> 3u));
  return ${value};`;
    }
    case GgmlType.Q4_K:
    case GgmlType.Q5_K: {
      const L = type === GgmlType.Q4_K ? Q4_K : Q5_K;
      // Group g = i / 32; its quants are the low (even g) or high (odd g) nibbles of qs[32 (g / 2) ..][0..32).
      const high = type === GgmlType.Q5_K
        ? `\n  let h = (${p}_u8x4(block + ${Q5_K.at.qh}u + (i & 31u)) >> g) & 0x01010101u;
  q += 16.0 * vec4<f32>(vec4<u32>(h & 0xffu, (h >> 8u) & 0xffu, (h >> 16u) & 0xffu, h >> 24u));`
        : '';
      return `let g = i >> 5u;
  let sm = ${p}_scaleMin(block + ${L.at.scales}u, g);
  let dg = ${p}_f16(block + ${L.at.d}u) * f32(sm.x);
  let mg = ${p}_f16(block + ${L.at.dmin}u) * f32(sm.y);
  var q = ${p}_nibbles(${p}_u8x4(block + ${L.at.qs}u + 32u * (g >> 1u) + (i & 31u)), (g & 1u) == 1u);${high}
  return dg * q - mg;`;
    }
    case GgmlType.Q6_K:
      // Half h = i / 128, quarter k = (i / 32) % 4, l = i % 32: low bits from ql[64h + 32 (k & 1) + l] (low nibble
      // for k < 2), high bits 2k..2k+1 of qh[32h + l], int8 scale sc[8h + l / 16 + 2k].
      return `let half = i >> 7u;
  let k = (i >> 5u) & 3u;
  let l = i & 31u;
  let lo = ${p}_nibbles(${p}_u8x4(block + ${Q6_K.at.ql}u + 64u * half + 32u * (k & 1u) + l), k >= 2u);
  let hb = (${p}_u8x4(block + ${Q6_K.at.qh}u + 32u * half + l) >> (2u * k)) & 0x03030303u;
  let hi = vec4<f32>(vec4<u32>(hb & 0xffu, (hb >> 8u) & 0xffu, (hb >> 16u) & 0xffu, hb >> 24u));
  let sc = f32(bitcast<i32>(${p}_u8(block + ${Q6_K.at.scales}u + 8u * half + (l >> 4u) + 2u * k) << 24u) >> 24u);
  return (${p}_f16(block + ${Q6_K.at.d}u) * sc) * (lo + 16.0 * hi - 32.0);`;
  }
}

/** ggml's get_scale_min_k4 over the 12 packed bytes at `at`: (scale, min) of group g. */
function scaleMinK4Wgsl(p: string): string {
  return `fn ${p}_scaleMin(at: u32, g: u32) -> vec2<u32> {
  if (g < 4u) { return vec2<u32>(${p}_u8(at + g) & 63u, ${p}_u8(at + g + 4u) & 63u); }
  let b = ${p}_u8(at + g + 4u);
  return vec2<u32>((b & 0xfu) | ((${p}_u8(at + g - 4u) >> 6u) << 4u), (b >> 4u) | ((${p}_u8(at + g) >> 6u) << 4u));
}`;
}

/**
 * WGSL declaring `fn <name>(e: u32) -> vec4<f32>`: elements e..e+3 (e a multiple of 4) of a tensor of `type`
 * whose bytes are the binding `<array>` (array<u32>), dequantized in registers.
 */
export function wgslBlockQuad(type: GpuBlockType, name: string, array: string): string {
  const L = blockLayout(type);
  const shift = Math.log2(L.elements);
  const helpers = type === GgmlType.Q4_K || type === GgmlType.Q5_K ? `${byteReaders(name, array)}\n${scaleMinK4Wgsl(name)}` : byteReaders(name, array);
  return `${helpers}
fn ${name}(e: u32) -> vec4<f32> {
  let block = (e >> ${shift}u) * ${L.bytes}u;
  let i = e & ${L.elements - 1}u;
  ${quadBody(type, name)}
}`;
}
