// ggml tensor bytes -> f32, in the block layouts of ggml-types.ts and with ggml's arithmetic (ggml-quants.c:
// dequantize_row_*): every product is rounded to f32 in ggml's order, so the values equal ggml's bit for bit.
// The plain-TS reference of the WGSL accessors (block-wgsl.ts) and the reader of GGUF tensors on the CPU.
import { bf16ToF32, f16ToF32 } from './dtype.js';
import { GgmlType, Q4_0, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, QK_K, ggmlRowBytes, ggmlTypeName } from './ggml-types.js';

const fr = Math.fround;

function f16At(b: Uint8Array, at: number): number {
  return f16ToF32(b[at]! | (b[at + 1]! << 8));
}

function u32At(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** ggml's get_scale_min_k4: the 6-bit scale and min of group j (0..7) from the 12 packed bytes at `at`. */
export function scaleMinK4(j: number, q: Uint8Array, at: number): [number, number] {
  if (j < 4) return [q[at + j]! & 63, q[at + j + 4]! & 63];
  return [(q[at + j + 4]! & 0xf) | ((q[at + j - 4]! >> 6) << 4), (q[at + j + 4]! >> 4) | ((q[at + j]! >> 6) << 4)];
}

/** The `count` elements (whole blocks) of `type` stored in `bytes`, as f32. */
export function dequantizeRows(type: GgmlType, bytes: Uint8Array, count: number): Float32Array {
  const need = ggmlRowBytes(type, count);
  if (bytes.length < need) throw new Error(`${ggmlTypeName(type)}: ${count} elements need ${need} bytes, got ${bytes.length}`);
  const y = new Float32Array(count);
  switch (type) {
    case GgmlType.F32:
      y.set(new Float32Array(bytes.slice(0, need).buffer));
      break;
    case GgmlType.F16:
      for (let i = 0; i < count; i++) y[i] = f16At(bytes, 2 * i);
      break;
    case GgmlType.BF16:
      for (let i = 0; i < count; i++) y[i] = bf16ToF32(bytes[2 * i]! | (bytes[2 * i + 1]! << 8));
      break;
    case GgmlType.Q8_0:
      for (let b = 0, o = 0; o < count; b += Q8_0.bytes, o += 32) {
        const d = f16At(bytes, b + Q8_0.at.d);
        for (let j = 0; j < 32; j++) y[o + j] = fr(((bytes[b + Q8_0.at.qs + j]! << 24) >> 24) * d);
      }
      break;
    case GgmlType.Q4_0:
      for (let b = 0, o = 0; o < count; b += Q4_0.bytes, o += 32) {
        const d = f16At(bytes, b + Q4_0.at.d);
        for (let j = 0; j < 16; j++) {
          const q = bytes[b + Q4_0.at.qs + j]!;
          y[o + j] = fr(((q & 0xf) - 8) * d);
          y[o + j + 16] = fr(((q >> 4) - 8) * d);
        }
      }
      break;
    case GgmlType.Q5_0:
    case GgmlType.Q5_1: {
      const L = type === GgmlType.Q5_0 ? Q5_0 : Q5_1;
      for (let b = 0, o = 0; o < count; b += L.bytes, o += 32) {
        const d = f16At(bytes, b + L.at.d);
        const m = type === GgmlType.Q5_1 ? f16At(bytes, b + Q5_1.at.m) : 0;
        const qh = u32At(bytes, b + L.at.qh);
        for (let j = 0; j < 16; j++) {
          const q = bytes[b + L.at.qs + j]!;
          const q0 = (q & 0xf) | (((qh >>> j) & 1) << 4);
          const q1 = (q >> 4) | (((qh >>> (j + 16)) & 1) << 4);
          if (type === GgmlType.Q5_0) {
            y[o + j] = fr((q0 - 16) * d);
            y[o + j + 16] = fr((q1 - 16) * d);
          } else {
            y[o + j] = fr(fr(q0 * d) + m);
            y[o + j + 16] = fr(fr(q1 * d) + m);
          }
        }
      }
      break;
    }
    case GgmlType.Q4_K:
    case GgmlType.Q5_K: {
      const L = type === GgmlType.Q4_K ? Q4_K : Q5_K;
      const high = type === GgmlType.Q5_K;
      for (let b = 0, o = 0; o < count; b += L.bytes, o += QK_K) {
        const d = f16At(bytes, b + L.at.d);
        const dmin = f16At(bytes, b + L.at.dmin);
        for (let g = 0; g < 8; g++) {
          const [sc, m] = scaleMinK4(g, bytes, b + L.at.scales);
          const dg = fr(d * sc);
          const mg = fr(dmin * m);
          // Group g: 32 bytes of qs starting at 32 * (g >> 1), low nibbles for even g, high for odd.
          const qs = b + L.at.qs + 32 * (g >> 1);
          for (let l = 0; l < 32; l++) {
            let q = g & 1 ? bytes[qs + l]! >> 4 : bytes[qs + l]! & 0xf;
            if (high && bytes[b + Q5_K.at.qh + l]! & (1 << g)) q += 16;
            y[o + 32 * g + l] = fr(fr(dg * q) - mg);
          }
        }
      }
      break;
    }
    case GgmlType.Q6_K:
      for (let b = 0, o = 0; o < count; b += Q6_K.bytes, o += QK_K) {
        const d = f16At(bytes, b + Q6_K.at.d);
        for (let i = 0; i < QK_K; i++) {
          const half = i >> 7;
          const quarter = (i >> 5) & 3;
          const l = i & 31;
          const ql = bytes[b + Q6_K.at.ql + 64 * half + l + 32 * (quarter & 1)]!;
          const qh = bytes[b + Q6_K.at.qh + 32 * half + l]!;
          const q = ((quarter < 2 ? ql & 0xf : ql >> 4) | (((qh >> (2 * quarter)) & 3) << 4)) - 32;
          const sc = (bytes[b + Q6_K.at.scales + 8 * half + (l >> 4) + 2 * quarter]! << 24) >> 24;
          y[o + i] = fr(fr(d * sc) * q);
        }
      }
      break;
    default:
      throw new Error(`no dequantizer for ggml type ${type}`);
  }
  return y;
}
