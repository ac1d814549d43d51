// f32 rows -> ggml tensor bytes in llama.cpp's block layouts (ggml-common.h), by the same algorithms as
// ggml's reference quantizers without an importance matrix (ggml-quants.c: quantize_row_*_ref), so
// that the bytes match what llama-quantize writes. ggml computes in single precision with no fused
// multiply-adds: Q8_0 and the K-quants (what the exports spend their time on) run whole blocks in WebAssembly's
// native f32 with SIMD (kquant.wat); the 32-blocks of Q4_0/Q5_0/Q5_1 (fallbacks for odd rows) in JS, every
// intermediate rounded to f32 with Math.fround, in ggml's order.
import { f32ToBf16, f32ToF16 } from '../gpu/dtype.js';
import { GgmlType, Q4_0, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, QK_K, ggmlBlockSize, ggmlRowBytes, ggmlTypeName } from '../gpu/ggml-types.js';
import { KQUANT_WASM_BASE64 } from './kquant-wasm.js';

const fr = Math.fround;

function setF16(out: Uint8Array, at: number, x: number): void {
  const h = f32ToF16(x);
  out[at] = h & 0xff;
  out[at + 1] = h >>> 8;
}

/**
 * Convert or quantize `src` (whole rows of `rowLength` elements) to `type`. Returns the bytes
 * (written into `out` when given; it must hold exactly the result).
 */
export function quantizeRows(type: GgmlType, src: Float32Array, rowLength: number, out?: Uint8Array): Uint8Array {
  if (src.length % rowLength !== 0) throw new Error(`${src.length} elements are not whole rows of ${rowLength}`);
  const bytes = ggmlRowBytes(type, rowLength) * (src.length / rowLength);
  const dst = out ?? new Uint8Array(bytes);
  if (dst.length !== bytes) throw new Error(`output holds ${dst.length} bytes, ${ggmlTypeName(type)} needs ${bytes}`);
  const nBlocks = src.length / ggmlBlockSize(type);
  switch (type) {
    case GgmlType.F32:
      dst.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
      break;
    case GgmlType.F16:
      convertF16(src, dst);
      break;
    case GgmlType.BF16:
      for (let i = 0; i < src.length; i++) {
        const h = f32ToBf16(src[i]!);
        dst[2 * i] = h & 0xff;
        dst[2 * i + 1] = h >>> 8;
      }
      break;
    case GgmlType.Q8_0:
      quantizeInWasm((k) => k.q8_0, Q8_0.elements, Q8_0.bytes, src, dst);
      break;
    case GgmlType.Q4_0:
      for (let b = 0; b < nBlocks; b++) quantizeQ4_0(src, b * 32, dst, b * Q4_0.bytes);
      break;
    case GgmlType.Q5_0:
      for (let b = 0; b < nBlocks; b++) quantizeQ5_0(src, b * 32, dst, b * Q5_0.bytes);
      break;
    case GgmlType.Q5_1:
      for (let b = 0; b < nBlocks; b++) quantizeQ5_1(src, b * 32, dst, b * Q5_1.bytes);
      break;
    case GgmlType.Q4_K:
      quantizeInWasm((k) => k.q4_K, QK_K, Q4_K.bytes, src, dst);
      break;
    case GgmlType.Q5_K:
      quantizeInWasm((k) => k.q5_K, QK_K, Q5_K.bytes, src, dst);
      break;
    case GgmlType.Q6_K:
      quantizeInWasm((k) => k.q6_K, QK_K, Q6_K.bytes, src, dst);
      break;
  }
  return dst;
}

/**
 * f32 -> f16 bits, rounding to nearest even, for every element; the normal range by one integer
 * expression (the rounding carry may step into the exponent, up to infinity, as it should), the
 * rest by f32ToF16.
 */
function convertF16(src: Float32Array, dst: Uint8Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    const exp = (b >>> 23) & 0xff;
    let h: number;
    // f32 exponents 113..142 are f16's normal exponents 1..30.
    if (exp > 112 && exp < 143) {
      h = ((b >>> 16) & 0x8000) | ((((b & 0x7fffffff) - (112 << 23) + 0xfff + ((b >>> 13) & 1)) >>> 13) & 0xffff);
    } else {
      h = f32ToF16(src[i]!);
    }
    dst[2 * i] = h & 0xff;
    dst[2 * i + 1] = h >>> 8;
  }
}

// ---- 32-element blocks ----

/** The value of largest magnitude (the first one on ties), as ggml's symmetric quantizers pick it. */
function signedAbsMax(x: Float32Array, xo: number, n: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[xo + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

function quantizeQ4_0(x: Float32Array, xo: number, y: Uint8Array, yo: number): void {
  const d = fr(signedAbsMax(x, xo, 32) / -8);
  const id = d ? fr(1 / d) : 0;
  setF16(y, yo + Q4_0.at.d, d);
  for (let j = 0; j < 16; j++) {
    // (int8_t) truncation of a value that is at least ~0.5, then clamp to 4 bits
    const q0 = Math.min(15, Math.trunc(fr(fr(x[xo + j]! * id) + 8.5)));
    const q1 = Math.min(15, Math.trunc(fr(fr(x[xo + 16 + j]! * id) + 8.5)));
    y[yo + Q4_0.at.qs + j] = q0 | (q1 << 4);
  }
}

function quantizeQ5_0(x: Float32Array, xo: number, y: Uint8Array, yo: number): void {
  const d = fr(signedAbsMax(x, xo, 32) / -16);
  const id = d ? fr(1 / d) : 0;
  setF16(y, yo + Q5_0.at.d, d);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const q0 = Math.min(31, Math.trunc(fr(fr(x[xo + j]! * id) + 16.5)));
    const q1 = Math.min(31, Math.trunc(fr(fr(x[xo + 16 + j]! * id) + 16.5)));
    y[yo + Q5_0.at.qs + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
    qh |= ((q0 >> 4) & 1) << j;
    qh |= ((q1 >> 4) & 1) << (j + 16);
  }
  writeU32(y, yo + Q5_0.at.qh, qh);
}

function quantizeQ5_1(x: Float32Array, xo: number, y: Uint8Array, yo: number): void {
  let min = Infinity;
  let max = -Infinity;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const d = fr(fr(max - min) / 31);
  const id = d ? fr(1 / d) : 0;
  setF16(y, yo + Q5_1.at.d, d);
  setF16(y, yo + Q5_1.at.m, min);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const q0 = Math.trunc(fr(fr(fr(x[xo + j]! - min) * id) + 0.5)) & 0xff;
    const q1 = Math.trunc(fr(fr(fr(x[xo + 16 + j]! - min) * id) + 0.5)) & 0xff;
    y[yo + Q5_1.at.qs + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
    qh |= ((q0 >> 4) & 1) << j;
    qh |= ((q1 >> 4) & 1) << (j + 16);
  }
  writeU32(y, yo + Q5_1.at.qh, qh);
}

function writeU32(y: Uint8Array, at: number, v: number): void {
  y[at] = v & 0xff;
  y[at + 1] = (v >>> 8) & 0xff;
  y[at + 2] = (v >>> 16) & 0xff;
  y[at + 3] = (v >>> 24) & 0xff;
}

// ---- Q8_0 and the K-quants: whole blocks in WebAssembly (kquant.wat) ----

/** Byte offset of the blocks handed to the module, and of their output; the scratch below is the module's. */
const WASM_IN = 4096;
/** Values per call: the module's memory (8 pages) holds them and their output (at most 34 bytes per 32). */
const WASM_CHUNK = 1 << 16;
const WASM_OUT = WASM_IN + 4 * WASM_CHUNK;

type BlockQuantizer = (x: number, nBlocks: number, y: number) => void;

interface KQuantWasm {
  q8_0: BlockQuantizer;
  q4_K: BlockQuantizer;
  q5_K: BlockQuantizer;
  q6_K: BlockQuantizer;
  f32: Float32Array;
  u8: Uint8Array;
}

let kquantWasm: KQuantWasm | undefined;

/** The field offsets and block sizes kquant.wat writes, which must be the declared layouts (ggml-types.ts). */
const WASM_LAYOUTS = [
  [Q8_0, { d: 0, qs: 2 }, 34],
  [Q4_K, { d: 0, dmin: 2, scales: 4, qs: 16 }, 144],
  [Q5_K, { d: 0, dmin: 2, scales: 4, qh: 16, qs: 48 }, 176],
  [Q6_K, { ql: 0, qh: 128, scales: 192, d: 208 }, 210],
] as const;

function checkWasmLayouts(): void {
  for (const [layout, at, bytes] of WASM_LAYOUTS) {
    const declared = layout.at as Record<string, number>;
    if (layout.bytes !== bytes || Object.entries(at).some(([field, offset]) => declared[field] !== offset)) {
      throw new Error(`kquant.wat writes ${layout.name} blocks as ${JSON.stringify(at)} in ${bytes} bytes; the declared layout differs`);
    }
  }
}

/** The module, instantiated on first use (synchronously: it is small enough for a browser's main thread). */
function kquant(): KQuantWasm {
  if (!kquantWasm) {
    checkWasmLayouts();
    const bytes = Uint8Array.from(atob(KQUANT_WASM_BASE64), (c) => c.charCodeAt(0));
    const exports = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as Omit<KQuantWasm, 'f32' | 'u8'> & { memory: WebAssembly.Memory };
    const buffer = exports.memory.buffer;
    kquantWasm = { q8_0: exports.q8_0, q4_K: exports.q4_K, q5_K: exports.q5_K, q6_K: exports.q6_K, f32: new Float32Array(buffer), u8: new Uint8Array(buffer) };
  }
  return kquantWasm;
}

/** Quantize whole blocks with the module, a chunk at a time through its memory. */
function quantizeInWasm(pick: (k: KQuantWasm) => BlockQuantizer, blockElements: number, blockBytes: number, src: Float32Array, dst: Uint8Array): void {
  const k = kquant();
  const run = pick(k);
  const perCall = WASM_CHUNK / blockElements;
  const nBlocks = src.length / blockElements;
  for (let b = 0; b < nBlocks; b += perCall) {
    const n = Math.min(perCall, nBlocks - b);
    k.f32.set(src.subarray(b * blockElements, (b + n) * blockElements), WASM_IN / 4);
    run(WASM_IN, n, WASM_OUT);
    dst.set(k.u8.subarray(WASM_OUT, WASM_OUT + n * blockBytes), b * blockBytes);
  }
}
