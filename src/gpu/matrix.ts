import { GPU_BLOCK_TYPES, wgslBlockQuad, type GpuBlockType } from './block-wgsl.js';
import type { Gpu } from './device.js';
import { packBf16 } from './dtype.js';
import { GgmlType, ggmlRowBytes, ggmlTypeName } from './ggml-types.js';

/** The formats the loaders convert weights to: f32, or bf16 (two per u32, element 2i in the low half). */
export type WeightDType = 'f32' | 'bf16';

/**
 * How a matrix is held on the GPU: a converted format, f16 (a GGUF's F16 tensors, pairs as bf16), or a ggml
 * block format kept as the GGUF stores it and dequantized in registers by the kernels that read it.
 */
export type MatrixDType = WeightDType | 'f16' | BlockDType;
export type BlockDType = 'q8_0' | 'q4_0' | 'q5_0' | 'q5_1' | 'q4_k' | 'q5_k' | 'q6_k';

const BLOCK_DTYPES: Record<BlockDType, GpuBlockType> = {
  q8_0: GgmlType.Q8_0, q4_0: GgmlType.Q4_0, q5_0: GgmlType.Q5_0, q5_1: GgmlType.Q5_1, q4_k: GgmlType.Q4_K, q5_k: GgmlType.Q5_K,
  q6_k: GgmlType.Q6_K,
};

export function isBlockDType(dtype: MatrixDType): dtype is BlockDType {
  return Object.prototype.hasOwnProperty.call(BLOCK_DTYPES, dtype);
}

/** The ggml type of a matrix dtype (its bytes are that type's). */
export function ggmlTypeOfDType(dtype: MatrixDType): GgmlType {
  if (isBlockDType(dtype)) return BLOCK_DTYPES[dtype];
  return dtype === 'f32' ? GgmlType.F32 : dtype === 'bf16' ? GgmlType.BF16 : GgmlType.F16;
}

/** The matrix dtype that holds a ggml type as it is, or undefined when the GPU does not read that type. */
export function dtypeOfGgmlType(type: GgmlType): MatrixDType | undefined {
  if (type === GgmlType.F32) return 'f32';
  if (type === GgmlType.BF16) return 'bf16';
  if (type === GgmlType.F16) return 'f16';
  if ((GPU_BLOCK_TYPES as readonly GgmlType[]).includes(type)) return ggmlTypeName(type).toLowerCase() as BlockDType;
  return undefined;
}

/** Rows [rowStart, rowStart + rows) of a matrix, in one buffer that fits a storage binding. */
export interface MatrixPart {
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
}

/**
 * A row-major [rows, cols] matrix on the GPU, split by rows into parts that each fit the adapter's binding
 * limit (a 151936 x 1024 embedding does not fit lavapipe's 128 MiB). bf16 matrices hold two values per u32.
 */
export interface GpuMatrix {
  rows: number;
  cols: number;
  dtype: MatrixDType;
  parts: MatrixPart[];
}

/** Bytes of one row of `cols` values; block formats need whole blocks (32 or 256 values) per row. */
export function matrixRowBytes(cols: number, dtype: MatrixDType): number {
  if ((dtype === 'bf16' || dtype === 'f16') && cols % 2 !== 0) throw new Error(`${dtype} matrix needs an even row length, got ${cols}`);
  return ggmlRowBytes(ggmlTypeOfDType(dtype), cols);
}

/**
 * How many rows go in one part: whole rows, so a part starts on a block boundary and (16-byte padded, as
 * buffers are) fits one binding. bf16 and f16 rows must start on a u32 word, so cols must be even.
 */
export function rowsPerPart(gpu: Gpu, cols: number, dtype: MatrixDType): number {
  const rowBytes = matrixRowBytes(cols, dtype);
  let rows = Math.floor(gpu.maxBindingBytes / rowBytes);
  while (rows > 0 && Math.ceil((rows * rowBytes) / 16) * 16 > gpu.maxBindingBytes) rows--;
  if (rows < 1) throw new Error(`one row of ${cols} values does not fit a ${gpu.maxBindingBytes}-byte binding`);
  return rows;
}

/**
 * Upload a matrix given its rows in `dtype`'s byte layout: `rowBytes(start, count)` returns rows
 * [start, start+count) so that a large checkpoint tensor is copied part by part, never held twice.
 */
export function uploadMatrix(
  gpu: Gpu,
  rows: number,
  cols: number,
  dtype: MatrixDType,
  rowBytes: (start: number, count: number) => ArrayBufferView,
  label = 'matrix',
): GpuMatrix {
  const per = rowsPerPart(gpu, cols, dtype);
  const parts: MatrixPart[] = [];
  for (let start = 0; start < rows; start += per) {
    const count = Math.min(per, rows - start);
    const data = rowBytes(start, count);
    const expected = count * matrixRowBytes(cols, dtype);
    if (data.byteLength !== expected) throw new Error(`${label}: expected ${expected} bytes for rows ${start}..${start + count}, got ${data.byteLength}`);
    parts.push({ buffer: gpu.upload(data, `${label}[${start}]`), rowStart: start, rows: count });
  }
  return { rows, cols, dtype, parts };
}

/** A matrix's parts without data: what `uploadMatrix` allocates, for a dry run (the memory plan). */
export function allocateMatrix(gpu: Gpu, rows: number, cols: number, dtype: MatrixDType, label = 'matrix'): GpuMatrix {
  const per = rowsPerPart(gpu, cols, dtype);
  const parts: MatrixPart[] = [];
  for (let start = 0; start < rows; start += per) {
    const count = Math.min(per, rows - start);
    parts.push({ buffer: gpu.storage(count * matrixRowBytes(cols, dtype), `${label}[${start}]`), rowStart: start, rows: count });
  }
  return { rows, cols, dtype, parts };
}

/** Upload an f32 [rows, cols] array, converting to bf16 when asked. */
export function matrixFromF32(gpu: Gpu, values: Float32Array, rows: number, cols: number, dtype: WeightDType, label = 'matrix'): GpuMatrix {
  if (values.length !== rows * cols) throw new Error(`${label}: ${values.length} values for ${rows}x${cols}`);
  return uploadMatrix(gpu, rows, cols, dtype, (start, count) => {
    const slice = values.subarray(start * cols, (start + count) * cols);
    return dtype === 'bf16' ? packBf16(slice) : slice;
  }, label);
}

/** Upload a matrix from its bytes in `dtype`'s layout (a GGUF tensor's data), part by part. */
export function matrixFromBytes(gpu: Gpu, bytes: Uint8Array, rows: number, cols: number, dtype: MatrixDType, label = 'matrix'): GpuMatrix {
  const rowBytes = matrixRowBytes(cols, dtype);
  if (bytes.length !== rows * rowBytes) throw new Error(`${label}: ${bytes.length} bytes for ${rows}x${cols} ${dtype}`);
  return uploadMatrix(gpu, rows, cols, dtype, (start, count) => bytes.subarray(start * rowBytes, (start + count) * rowBytes), label);
}

export function releaseMatrix(gpu: Gpu, m: GpuMatrix): void {
  for (const p of m.parts) gpu.release(p.buffer);
  m.parts = [];
}

/**
 * WGSL that declares `fn <name>(i: u32) -> f32` reading element i of a weight binding `<array>`
 * (array<f32> for f32, array<u32> for the others: 16-bit pairs, or a block format's raw bytes).
 */
export function wgslWeightLoad(dtype: MatrixDType, name: string, array: string): string {
  if (dtype === 'f32') return `fn ${name}(i: u32) -> f32 { return ${array}[i]; }`;
  if (dtype === 'f16') return `fn ${name}(i: u32) -> f32 { return unpack2x16float(${array}[i >> 1u])[i & 1u]; }`;
  if (isBlockDType(dtype)) {
    return `${wgslBlockQuad(BLOCK_DTYPES[dtype], `${name}Quad`, array)}
fn ${name}(i: u32) -> f32 { return ${name}Quad(i & ~3u)[i & 3u]; }`;
  }
  return `fn ${name}(i: u32) -> f32 {
  let word = ${array}[i >> 1u];
  return select(bitcast<f32>(word & 0xffff0000u), bitcast<f32>(word << 16u), (i & 1u) == 0u);
}`;
}

/**
 * WGSL declaring `fn <name>(e: u32) -> vec4<f32>`: elements e..e+3 of a block-format weight (e a multiple of
 * 4, so the quad lies in one block), dequantized in registers.
 */
export function wgslBlockWeightQuad(dtype: BlockDType, name: string, array: string): string {
  return wgslBlockQuad(BLOCK_DTYPES[dtype], name, array);
}

/** WGSL element type of a weight binding. */
export function wgslWeightArray(dtype: MatrixDType): string {
  return dtype === 'f32' ? 'array<f32>' : 'array<u32>';
}
