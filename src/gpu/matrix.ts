import type { Gpu } from './device.js';
import { packBf16 } from './dtype.js';

export type WeightDType = 'f32' | 'bf16';

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
  dtype: WeightDType;
  parts: MatrixPart[];
}

export function bytesPerElement(dtype: WeightDType): number {
  return dtype === 'bf16' ? 2 : 4;
}

/** How many rows go in one part. bf16 rows must start on a u32 word, so cols must be even. */
export function rowsPerPart(gpu: Gpu, cols: number, dtype: WeightDType): number {
  if (dtype === 'bf16' && cols % 2 !== 0) throw new Error(`bf16 matrix needs an even row length, got ${cols}`);
  const rowBytes = cols * bytesPerElement(dtype);
  const rows = Math.floor(gpu.maxBindingBytes / rowBytes);
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
  dtype: WeightDType,
  rowBytes: (start: number, count: number) => ArrayBufferView,
  label = 'matrix',
): GpuMatrix {
  const per = rowsPerPart(gpu, cols, dtype);
  const parts: MatrixPart[] = [];
  for (let start = 0; start < rows; start += per) {
    const count = Math.min(per, rows - start);
    const data = rowBytes(start, count);
    const expected = count * cols * bytesPerElement(dtype);
    if (data.byteLength !== expected) throw new Error(`${label}: expected ${expected} bytes for rows ${start}..${start + count}, got ${data.byteLength}`);
    parts.push({ buffer: gpu.upload(data, `${label}[${start}]`), rowStart: start, rows: count });
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

export function releaseMatrix(gpu: Gpu, m: GpuMatrix): void {
  for (const p of m.parts) gpu.release(p.buffer);
  m.parts = [];
}

/**
 * WGSL that declares `fn <name>(i: u32) -> f32` reading element i of a weight binding `<array>`
 * (array<f32> for f32, array<u32> of bf16 pairs for bf16).
 */
export function wgslWeightLoad(dtype: WeightDType, name: string, array: string): string {
  if (dtype === 'f32') return `fn ${name}(i: u32) -> f32 { return ${array}[i]; }`;
  return `fn ${name}(i: u32) -> f32 {
  let word = ${array}[i >> 1u];
  return select(bitcast<f32>(word & 0xffff0000u), bitcast<f32>(word << 16u), (i & 1u) == 0u);
}`;
}

/** WGSL element type of a weight binding. */
export function wgslWeightArray(dtype: WeightDType): string {
  return dtype === 'f32' ? 'array<f32>' : 'array<u32>';
}
