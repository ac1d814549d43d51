// f32 rows -> ggml tensor bytes in llama.cpp's block layouts (ggml-common.h), by the same algorithms as
// ggml's reference quantizers without an importance matrix (ggml-quants.c: quantize_row_*_ref), so
// that the bytes match what llama-quantize writes. ggml computes in single precision with no fused
// multiply-adds, so every intermediate is rounded to f32 with Math.fround, in ggml's order; the K-quants'
// scale searches, where nearly all the time goes, run in WebAssembly's native f32 (kquant.wat).
import { f16ToF32, f32ToBf16, f32ToF16 } from '../gpu/dtype.js';
import { GgmlType, ggmlBlockSize, ggmlRowBytes, ggmlTypeName } from './ggml-types.js';
import { KQUANT_WASM_BASE64 } from './kquant-wasm.js';

const fr = Math.fround;
const QK_K = 256;
/** ggml's GROUP_MAX_EPS: below this a group is treated as all zeros. */
const GROUP_MAX_EPS = fr(1e-15);
const TENTH = fr(0.1);
/** 1.5 * 2^23: adding it to a float rounds to an integer (ties to even) in f32, ggml's nearest_int. */
const ROUND_MAGIC = 12582912;

function nearestInt(x: number): number {
  return fr(x + ROUND_MAGIC) - ROUND_MAGIC;
}

/** C's roundf: halves away from zero. */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

function setF16(out: Uint8Array, at: number, x: number): void {
  const h = f32ToF16(x);
  out[at] = h & 0xff;
  out[at + 1] = h >>> 8;
}

/** The f32 value of the f16 just written at `at`, as ggml rereads it. */
function getF16(out: Uint8Array, at: number): number {
  return f16ToF32(out[at]! | (out[at + 1]! << 8));
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
      for (let b = 0; b < nBlocks; b++) quantizeQ8_0(src, b * 32, dst, b * 34);
      break;
    case GgmlType.Q4_0:
      for (let b = 0; b < nBlocks; b++) quantizeQ4_0(src, b * 32, dst, b * 18);
      break;
    case GgmlType.Q5_0:
      for (let b = 0; b < nBlocks; b++) quantizeQ5_0(src, b * 32, dst, b * 22);
      break;
    case GgmlType.Q5_1:
      for (let b = 0; b < nBlocks; b++) quantizeQ5_1(src, b * 32, dst, b * 24);
      break;
    case GgmlType.Q4_K: {
      const s = new KQuantScratch();
      for (let b = 0; b < nBlocks; b++) quantizeQ4_K(src, b * QK_K, dst, b * 144, s);
      break;
    }
    case GgmlType.Q5_K: {
      const s = new KQuantScratch();
      for (let b = 0; b < nBlocks; b++) quantizeQ5_K(src, b * QK_K, dst, b * 176, s);
      break;
    }
    case GgmlType.Q6_K: {
      const s = new KQuantScratch();
      for (let b = 0; b < nBlocks; b++) quantizeQ6_K(src, b * QK_K, dst, b * 210, s);
      break;
    }
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

function quantizeQ8_0(x: Float32Array, xo: number, y: Uint8Array, yo: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) {
    const a = Math.abs(x[xo + j]!);
    if (a > amax) amax = a;
  }
  const d = fr(amax / 127);
  const id = d ? fr(1 / d) : 0;
  setF16(y, yo, d);
  for (let j = 0; j < 32; j++) y[yo + 2 + j] = roundHalfAway(fr(x[xo + j]! * id)) & 0xff;
}

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
  setF16(y, yo, d);
  for (let j = 0; j < 16; j++) {
    // (int8_t) truncation of a value that is at least ~0.5, then clamp to 4 bits
    const q0 = Math.min(15, Math.trunc(fr(fr(x[xo + j]! * id) + 8.5)));
    const q1 = Math.min(15, Math.trunc(fr(fr(x[xo + 16 + j]! * id) + 8.5)));
    y[yo + 2 + j] = q0 | (q1 << 4);
  }
}

function quantizeQ5_0(x: Float32Array, xo: number, y: Uint8Array, yo: number): void {
  const d = fr(signedAbsMax(x, xo, 32) / -16);
  const id = d ? fr(1 / d) : 0;
  setF16(y, yo, d);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const q0 = Math.min(31, Math.trunc(fr(fr(x[xo + j]! * id) + 16.5)));
    const q1 = Math.min(31, Math.trunc(fr(fr(x[xo + 16 + j]! * id) + 16.5)));
    y[yo + 6 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
    qh |= ((q0 >> 4) & 1) << j;
    qh |= ((q1 >> 4) & 1) << (j + 16);
  }
  writeU32(y, yo + 2, qh);
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
  setF16(y, yo, d);
  setF16(y, yo + 2, min);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const q0 = Math.trunc(fr(fr(fr(x[xo + j]! - min) * id) + 0.5)) & 0xff;
    const q1 = Math.trunc(fr(fr(fr(x[xo + 16 + j]! - min) * id) + 0.5)) & 0xff;
    y[yo + 8 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
    qh |= ((q0 >> 4) & 1) << j;
    qh |= ((q1 >> 4) & 1) << (j + 16);
  }
  writeU32(y, yo + 4, qh);
}

function writeU32(y: Uint8Array, at: number, v: number): void {
  y[at] = v & 0xff;
  y[at + 1] = (v >>> 8) & 0xff;
  y[at + 2] = (v >>> 16) & 0xff;
  y[at + 3] = (v >>> 24) & 0xff;
}

// ---- 256-element super-blocks ----

/** Per-call working arrays, so the block loops allocate nothing. */
class KQuantScratch {
  readonly L = new Uint8Array(QK_K);
  readonly scales = new Float32Array(16);
  readonly mins = new Float32Array(8);
}

// The scale searches run in WebAssembly (kquant.wat): native f32 arithmetic gives ggml's results without
// rounding every JS f64 step with Math.fround. Byte offsets of the block in its memory:
/** The super-block's 256 values. */
const WASM_X = 1024;
/** One 32-element group's weights (Q4_K/Q5_K). */
const WASM_W = 2048;
/** The super-block's 256 levels from the searches. */
const WASM_L = 2176;

interface KQuantWasm {
  /** make_qkx2_quants on a group; -min left at byte 0. */
  qkx2(x: number, w: number, L: number, nmax: number, rmin: number, rdelta: number, nstep: number): number;
  /** make_qx_quants (rmse_type 1, no weights) on a 16-element group. */
  qx(x: number, L: number, nmax: number): number;
  f32: Float32Array;
  u8: Uint8Array;
}

let kquantWasm: KQuantWasm | undefined;

/** The module, instantiated on first use (synchronously: it is small enough for a browser's main thread). */
function kquant(): KQuantWasm {
  if (!kquantWasm) {
    const bytes = Uint8Array.from(atob(KQUANT_WASM_BASE64), (c) => c.charCodeAt(0));
    const exports = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as Omit<KQuantWasm, 'f32' | 'u8'> & { memory: WebAssembly.Memory };
    const buffer = exports.memory.buffer;
    kquantWasm = { qkx2: exports.qkx2, qx: exports.qx, f32: new Float32Array(buffer), u8: new Uint8Array(buffer) };
  }
  return kquantWasm;
}

/** Pack eight 6-bit scales and mins into the 12 bytes of a Q4_K/Q5_K block (ggml's layout). */
function packScalesMins(y: Uint8Array, at: number, ls: Uint8Array, lm: Uint8Array): void {
  for (let j = 0; j < 12; j++) y[at + j] = 0;
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      y[at + j] = ls[j]!;
      y[at + j + 4] = lm[j]!;
    } else {
      y[at + j + 4] = (ls[j]! & 0xf) | ((lm[j]! & 0xf) << 4);
      y[at + j - 4] |= (ls[j]! >> 4) << 6;
      y[at + j] |= (lm[j]! >> 4) << 6;
    }
  }
}

/** ggml's get_scale_min_k4: the j-th 6-bit scale (sc) and min (m) of the packed 12 bytes. */
function scaleMinK4(j: number, q: Uint8Array, at: number): [number, number] {
  if (j < 4) return [q[at + j]! & 63, q[at + j + 4]! & 63];
  return [(q[at + j + 4]! & 0xf) | ((q[at + j - 4]! >> 6) << 4), (q[at + j + 4]! >> 4) | ((q[at + j]! >> 6) << 4)];
}

const LS = new Uint8Array(8);
const LM = new Uint8Array(8);

/**
 * The shared part of Q4_K and Q5_K: per 32-element group a scale and min from make_qkx2_quants,
 * quantized to 6 bits against the block maxima; d, dmin and the packed scales written at y[yo..yo+16);
 * then the final levels in s.L from the stored (rounded) scales.
 */
function quantizeAffineSuperBlock(
  x: Float32Array, xo: number, y: Uint8Array, yo: number, s: KQuantScratch,
  nmax: number, rmin: number, nstep: number,
): void {
  const { L, scales, mins } = s;
  const k = kquant();
  k.f32.set(x.subarray(xo, xo + QK_K), WASM_X / 4);
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const g = xo + 32 * j;
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(x[g + l]! * x[g + l]!));
    const avX = fr(Math.sqrt(fr(sumX2 / 32)));
    for (let l = 0; l < 32; l++) k.f32[WASM_W / 4 + l] = avX + Math.abs(x[g + l]!);
    scales[j] = k.qkx2(WASM_X + 128 * j, WASM_W, WASM_L + 32 * j, nmax, rmin, TENTH, nstep);
    mins[j] = k.f32[0]!;
    if (scales[j]! > maxScale) maxScale = scales[j]!;
    if (mins[j]! > maxMin) maxMin = mins[j]!;
  }
  L.set(k.u8.subarray(WASM_L, WASM_L + QK_K));
  const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
  for (let j = 0; j < 8; j++) {
    LS[j] = Math.min(63, nearestInt(fr(invScale * scales[j]!)) & 0xff);
    LM[j] = Math.min(63, nearestInt(fr(invMin * mins[j]!)) & 0xff);
  }
  packScalesMins(y, yo + 4, LS, LM);
  setF16(y, yo, fr(maxScale / 63));
  setF16(y, yo + 2, fr(maxMin / 63));
  const d0 = getF16(y, yo);
  const dmin0 = getF16(y, yo + 2);
  for (let j = 0; j < 8; j++) {
    const [sc, m] = scaleMinK4(j, y, yo + 4);
    const d = fr(d0 * sc);
    if (!d) continue;
    const dm = fr(dmin0 * m);
    for (let i = 0; i < 32; i++) {
      L[32 * j + i] = Math.max(0, Math.min(nmax, nearestInt(fr(fr(x[xo + 32 * j + i]! + dm) / d))));
    }
  }
}

function quantizeQ4_K(x: Float32Array, xo: number, y: Uint8Array, yo: number, s: KQuantScratch): void {
  quantizeAffineSuperBlock(x, xo, y, yo, s, 15, fr(-1), 20);
  const L = s.L;
  let q = yo + 16;
  for (let j = 0; j < QK_K; j += 64) {
    for (let l = 0; l < 32; l++) y[q + l] = L[j + l]! | (L[j + l + 32]! << 4);
    q += 32;
  }
}

function quantizeQ5_K(x: Float32Array, xo: number, y: Uint8Array, yo: number, s: KQuantScratch): void {
  quantizeAffineSuperBlock(x, xo, y, yo, s, 31, fr(-0.5), 15);
  const L = s.L;
  const qh = yo + 16;
  let ql = yo + 48;
  y.fill(0, qh, qh + 32);
  let m1 = 1;
  let m2 = 2;
  for (let n = 0; n < QK_K; n += 64) {
    for (let j = 0; j < 32; j++) {
      let l1 = L[n + j]!;
      if (l1 > 15) {
        l1 -= 16;
        y[qh + j] |= m1;
      }
      let l2 = L[n + j + 32]!;
      if (l2 > 15) {
        l2 -= 16;
        y[qh + j] |= m2;
      }
      y[ql + j] = l1 | (l2 << 4);
    }
    m1 <<= 2;
    m2 <<= 2;
    ql += 32;
  }
}

function quantizeQ6_K(x: Float32Array, xo: number, y: Uint8Array, yo: number, s: KQuantScratch): void {
  const { L, scales } = s;
  const k = kquant();
  k.f32.set(x.subarray(xo, xo + QK_K), WASM_X / 4);
  let maxScale = 0;
  let maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const scale = k.qx(WASM_X + 64 * ib, WASM_L + 16 * ib, 32);
    scales[ib] = scale;
    if (Math.abs(scale) > maxAbsScale) {
      maxAbsScale = Math.abs(scale);
      maxScale = scale;
    }
  }
  L.set(k.u8.subarray(WASM_L, WASM_L + QK_K));
  const qlAt = yo;
  const qhAt = yo + 128;
  const scAt = yo + 192;
  const dAt = yo + 208;
  if (maxAbsScale < GROUP_MAX_EPS) {
    y.fill(0, yo, yo + 210);
    return;
  }
  const iscale = fr(-128 / maxScale);
  setF16(y, dAt, fr(1 / iscale));
  const d0 = getF16(y, dAt);
  for (let ib = 0; ib < 16; ib++) y[scAt + ib] = Math.min(127, nearestInt(fr(iscale * scales[ib]!))) & 0xff;
  for (let j = 0; j < 16; j++) {
    const sc = (y[scAt + j]! << 24) >> 24;
    const d = fr(d0 * sc);
    if (!d) continue;
    for (let i = 0; i < 16; i++) {
      const l = Math.max(-32, Math.min(31, nearestInt(fr(x[xo + 16 * j + i]! / d))));
      L[16 * j + i] = l + 32;
    }
  }
  let ql = qlAt;
  let qh = qhAt;
  for (let j = 0; j < QK_K; j += 128) {
    for (let l = 0; l < 32; l++) {
      const a = L[j + l]!;
      const b = L[j + l + 32]!;
      const c = L[j + l + 64]!;
      const e = L[j + l + 96]!;
      y[ql + l] = (a & 0xf) | ((c & 0xf) << 4);
      y[ql + l + 32] = (b & 0xf) | ((e & 0xf) << 4);
      y[qh + l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
    }
    ql += 64;
    qh += 32;
  }
}
