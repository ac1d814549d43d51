// ggml tensor types with their ids (ggml.h) and block layouts (ggml-common.h), declared once here and read
// by the quantizer (gguf/quantize.ts), the dequantizer (dequantize.ts) and the WGSL accessors (block-wgsl.ts).
// Like ggml's static_asserts, each declaration's field sizes must add up to its block size (checked on load).

export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
}

/** Elements per K-quant super-block (ggml's QK_K). */
export const QK_K = 256;

/** Storage of one block field: f16 (2 bytes), u8 / i8 (1 byte), u32 (4 bytes, little-endian). */
type FieldKind = 'f16' | 'u8' | 'i8' | 'u32';
const KIND_BYTES: Record<FieldKind, number> = { f16: 2, u8: 1, i8: 1, u32: 4 };

/** A block layout: fields in storage order as [kind, count]; offsets are derived. */
type FieldDecls = Record<string, readonly [FieldKind, number]>;

export interface BlockLayout<F extends FieldDecls = FieldDecls> {
  name: string;
  /** Elements per block. */
  elements: number;
  /** Bytes per block. */
  bytes: number;
  /** Byte offset of each field inside the block. */
  at: { readonly [K in keyof F]: number };
}

function declareBlock<F extends FieldDecls>(name: string, elements: number, bytes: number, fields: F): BlockLayout<F> {
  const at: Record<string, number> = {};
  let size = 0;
  for (const [field, [kind, count]] of Object.entries(fields)) {
    at[field] = size;
    size += KIND_BYTES[kind] * count;
  }
  if (size !== bytes) throw new Error(`block layout ${name}: fields take ${size} bytes, declared ${bytes}`);
  return { name, elements, bytes, at: at as BlockLayout<F>['at'] };
}

/** d · q, q in -128..127. */
export const Q8_0 = declareBlock('Q8_0', 32, 34, { d: ['f16', 1], qs: ['i8', 32] });
/** d · (q - 8); element j < 16 in the low nibble of qs[j], element j + 16 in its high nibble. */
export const Q4_0 = declareBlock('Q4_0', 32, 18, { d: ['f16', 1], qs: ['u8', 16] });
/** d · (q - 16), q's fifth bit of element j in bit j of qh; nibbles as Q4_0. */
export const Q5_0 = declareBlock('Q5_0', 32, 22, { d: ['f16', 1], qh: ['u32', 1], qs: ['u8', 16] });
/** d · q + m; bits as Q5_0. */
export const Q5_1 = declareBlock('Q5_1', 32, 24, { d: ['f16', 1], m: ['f16', 1], qh: ['u32', 1], qs: ['u8', 16] });
/**
 * Eight groups of 32: d · sc · q - dmin · m with 6-bit sc, m packed in 12 bytes (ggml's get_scale_min_k4).
 * Each 64 elements share 32 bytes of qs: the first 32 in the low nibbles, the next 32 in the high ones.
 */
export const Q4_K = declareBlock('Q4_K', QK_K, 144, { d: ['f16', 1], dmin: ['f16', 1], scales: ['u8', 12], qs: ['u8', QK_K / 2] });
/** As Q4_K with a fifth bit: bit g of qh[i % 32] for element i of group g; q in 0..31. */
export const Q5_K = declareBlock('Q5_K', QK_K, 176, { d: ['f16', 1], dmin: ['f16', 1], scales: ['u8', 12], qh: ['u8', QK_K / 8], qs: ['u8', QK_K / 2] });
/**
 * Sixteen groups of 16: d · sc · (q - 32), 6-bit q from a nibble of ql and two bits of qh, int8 sc. Each half of
 * 128 elements uses 64 bytes of ql and 32 of qh: quarter k (32 elements) takes ql[l + 32 (k & 1)]'s low (k < 2)
 * or high nibble and bits 2k, 2k+1 of qh[l].
 */
export const Q6_K = declareBlock('Q6_K', QK_K, 210, { ql: ['u8', QK_K / 2], qh: ['u8', QK_K / 4], scales: ['i8', QK_K / 16], d: ['f16', 1] });
const F32 = declareBlock('F32', 1, 4, { v: ['u32', 1] });
const F16 = declareBlock('F16', 1, 2, { v: ['f16', 1] });
const BF16 = declareBlock('BF16', 1, 2, { v: ['u8', 2] });

const LAYOUTS: Record<GgmlType, BlockLayout> = {
  [GgmlType.F32]: F32,
  [GgmlType.F16]: F16,
  [GgmlType.BF16]: BF16,
  [GgmlType.Q4_0]: Q4_0,
  [GgmlType.Q5_0]: Q5_0,
  [GgmlType.Q5_1]: Q5_1,
  [GgmlType.Q8_0]: Q8_0,
  [GgmlType.Q4_K]: Q4_K,
  [GgmlType.Q5_K]: Q5_K,
  [GgmlType.Q6_K]: Q6_K,
};

export function blockLayout(type: GgmlType): BlockLayout {
  const layout = LAYOUTS[type];
  if (!layout) throw new Error(`ggml type ${type} has no declared block layout`);
  return layout;
}

/** Whether `type` is one of the ggml types declared here. */
export function isKnownGgmlType(type: number): type is GgmlType {
  return Object.prototype.hasOwnProperty.call(LAYOUTS, type);
}

export function ggmlTypeName(type: GgmlType): string {
  return blockLayout(type).name;
}

export function ggmlBlockSize(type: GgmlType): number {
  return blockLayout(type).elements;
}

export function ggmlBlockBytes(type: GgmlType): number {
  return blockLayout(type).bytes;
}

export function isQuantized(type: GgmlType): boolean {
  return blockLayout(type).elements > 1;
}

/** Bytes of one row of `n` elements; throws when `n` is not a whole number of blocks. */
export function ggmlRowBytes(type: GgmlType, n: number): number {
  const t = blockLayout(type);
  if (n % t.elements !== 0) throw new Error(`${t.name} needs rows that are a multiple of ${t.elements} elements, got ${n}`);
  return (n / t.elements) * t.bytes;
}

/** Bytes of a tensor with ggml dims `ne` (ne[0] is the row length). */
export function ggmlTensorBytes(type: GgmlType, ne: readonly number[]): number {
  let rows = 1;
  for (let i = 1; i < ne.length; i++) rows *= ne[i]!;
  return ggmlRowBytes(type, ne[0] ?? 1) * rows;
}
