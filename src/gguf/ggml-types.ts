// ggml tensor types that loraforge writes, with their ids (ggml.h) and block sizes (ggml-common.h).

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

interface TypeTraits {
  name: string;
  /** Elements per block (1 for plain floats). */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
}

const TRAITS: Record<GgmlType, TypeTraits> = {
  [GgmlType.F32]: { name: 'F32', blockSize: 1, blockBytes: 4 },
  [GgmlType.F16]: { name: 'F16', blockSize: 1, blockBytes: 2 },
  [GgmlType.BF16]: { name: 'BF16', blockSize: 1, blockBytes: 2 },
  // f16 d, 16 bytes of nibbles
  [GgmlType.Q4_0]: { name: 'Q4_0', blockSize: 32, blockBytes: 18 },
  // f16 d, u32 high bits, 16 bytes of nibbles
  [GgmlType.Q5_0]: { name: 'Q5_0', blockSize: 32, blockBytes: 22 },
  // f16 d, f16 m, u32 high bits, 16 bytes of nibbles
  [GgmlType.Q5_1]: { name: 'Q5_1', blockSize: 32, blockBytes: 24 },
  // f16 d, 32 int8
  [GgmlType.Q8_0]: { name: 'Q8_0', blockSize: 32, blockBytes: 34 },
  // f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
  [GgmlType.Q4_K]: { name: 'Q4_K', blockSize: 256, blockBytes: 144 },
  // as Q4_K plus 32 bytes of high bits
  [GgmlType.Q5_K]: { name: 'Q5_K', blockSize: 256, blockBytes: 176 },
  // 128 bytes low nibbles, 64 bytes high 2 bits, 16 int8 scales, f16 d
  [GgmlType.Q6_K]: { name: 'Q6_K', blockSize: 256, blockBytes: 210 },
};

export function ggmlTypeName(type: GgmlType): string {
  return TRAITS[type].name;
}

export function ggmlBlockSize(type: GgmlType): number {
  return TRAITS[type].blockSize;
}

export function isQuantized(type: GgmlType): boolean {
  return TRAITS[type].blockSize > 1;
}

/** Bytes of one row of `n` elements; throws when `n` is not a whole number of blocks. */
export function ggmlRowBytes(type: GgmlType, n: number): number {
  const t = TRAITS[type];
  if (n % t.blockSize !== 0) throw new Error(`${t.name} needs rows that are a multiple of ${t.blockSize} elements, got ${n}`);
  return (n / t.blockSize) * t.blockBytes;
}

/** Bytes of a tensor with ggml dims `ne` (ne[0] is the row length). */
export function ggmlTensorBytes(type: GgmlType, ne: readonly number[]): number {
  let rows = 1;
  for (let i = 1; i < ne.length; i++) rows *= ne[i]!;
  return ggmlRowBytes(type, ne[0] ?? 1) * rows;
}
