// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON describing each tensor
// (dtype, shape, data_offsets relative to the end of the header), then the raw little-endian data.
// This module only needs random access to bytes (no Node API), so the browser demo reads checkpoints with it;
// src/model/safetensors.ts adds files on disk. Reading is by partial reads, so multi-GB checkpoints are never
// held whole.
import { f16ToF32 } from '../gpu/dtype.js';
import { fileError } from '../errors.js';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafetensorsDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** Bytes per element of a safetensors dtype. */
export function dtypeBytes(dtype: SafetensorsDType): number {
  return DTYPE_BYTES[dtype];
}

export function isSafetensorsDType(s: unknown): s is SafetensorsDType {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);
}

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  file: string;
  /** Absolute byte offset in `file`. */
  start: number;
  byteLength: number;
}

/** Larger headers are not real checkpoints (a 100k-tensor header is ~10 MB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const METADATA_KEY = '__metadata__';

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Random access to the bytes of one file: an open file descriptor in Node, a Blob (read with FileReaderSync in a
 * worker) or bytes in memory in a browser.
 */
export interface ByteSource {
  readonly size: number;
  /** `length` bytes at `offset` (fewer only when the source ends first). */
  read(offset: number, length: number): Uint8Array;
  close?(): void;
}

/** A source over bytes already in memory (no copy). */
export function memorySource(bytes: Uint8Array | ArrayBuffer): ByteSource {
  const all = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return { size: all.byteLength, read: (offset, length) => all.subarray(offset, Math.min(all.byteLength, offset + length)) };
}

/** Read exactly `length` bytes at `position`, or throw when the source is shorter. */
function readExact(source: ByteSource, file: string, position: number, length: number): Uint8Array {
  const bytes = source.read(position, length);
  if (bytes.byteLength !== length) throw fileError(file, `unexpected end of file reading ${length} bytes at offset ${position}`);
  return bytes;
}

/** Parse and validate the header of one safetensors file. */
function readHeader(source: ByteSource, file: string): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  const fileSize = source.size;
  if (fileSize < 8) throw fileError(file, `not a safetensors file: ${fileSize} bytes, shorter than the 8-byte header length`);
  const lengthBytes = readExact(source, file, 0, 8);
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) throw fileError(file, `not a safetensors file: header length ${headerLength} is absurd (> ${MAX_HEADER_BYTES})`);
  const n = Number(headerLength);
  if (8 + n > fileSize) throw fileError(file, `truncated safetensors file: header length ${n} goes beyond the file size ${fileSize}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readExact(source, file, 8, n)));
  } catch (e) {
    throw fileError(file, `safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(header)) throw fileError(file, 'safetensors header is not a JSON object');

  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (!isPlainObject(entry)) throw fileError(file, '__metadata__ is not an object of strings');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw fileError(file, `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const bad = (problem: string) => fileError(file, `tensor ${JSON.stringify(name)}: ${problem}`);
    if (!isPlainObject(entry)) throw bad('entry is not an object');
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isSafetensorsDType(dtype)) throw bad(`unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape)) throw bad('shape is not an array');
    let count = 1;
    for (const d of shape) {
      if (!Number.isSafeInteger(d) || (d as number) < 0) throw bad(`shape ${JSON.stringify(shape)} has a dimension that is not a non-negative integer`);
      count *= d as number;
      if (count > Number.MAX_SAFE_INTEGER) throw bad(`shape ${JSON.stringify(shape)} is too large`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
      throw bad(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw bad(`data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataSize) throw bad(`data_offsets [${begin}, ${end}] go beyond the ${dataSize} data bytes in the file`);
    const expected = count * DTYPE_BYTES[dtype];
    if (end - begin !== expected) throw bad(`shape ${JSON.stringify(shape)} of ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`);
    tensors.push({ name, dtype, shape: shape as number[], file, start: dataStart + begin, byteLength: end - begin });
    ranges.push({ name, begin, end });
  }
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur.begin < prev.end) throw fileError(file, `tensors ${JSON.stringify(prev.name)} and ${JSON.stringify(cur.name)} overlap in the data`);
  }
  return { tensors, metadata };
}

/** Convert raw little-endian tensor bytes to f32 values. */
export function bytesToF32(dtype: SafetensorsDType, bytes: Uint8Array): Float32Array {
  // Typed-array views need aligned offsets: copy when the bytes are not aligned for the element size.
  const size = DTYPE_BYTES[dtype];
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const { buffer, byteOffset } = aligned;
  const count = bytes.byteLength / size;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buffer, byteOffset, count).slice();
    case 'F64':
      return Float32Array.from(new Float64Array(buffer, byteOffset, count));
    case 'F16': {
      const h = new Uint16Array(buffer, byteOffset, count);
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = f16ToF32(h[i]!);
      return out;
    }
    case 'BF16': {
      const h = new Uint16Array(buffer, byteOffset, count);
      const out = new Float32Array(count);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = h[i]! << 16;
      return out;
    }
    case 'I64': {
      const v = new BigInt64Array(buffer, byteOffset, count);
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = Number(v[i]!);
      return out;
    }
    case 'I32':
      return Float32Array.from(new Int32Array(buffer, byteOffset, count));
    case 'I16':
      return Float32Array.from(new Int16Array(buffer, byteOffset, count));
    case 'I8':
      return Float32Array.from(new Int8Array(buffer, byteOffset, count));
    case 'U8':
    case 'BOOL':
      return Float32Array.from(new Uint8Array(buffer, byteOffset, count));
  }
}


/** Tensors of one checkpoint: a single safetensors file, or the shards named by a model.safetensors.index.json. */
export class SafetensorsReader {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  private readonly sources = new Map<string, ByteSource>();

  constructor(
    /** What was opened (file or folder), for error messages. */
    readonly path: string,
  ) {}

  /** Add every tensor of one safetensors file; `file` names it in TensorInfo and in errors. */
  addFile(file: string, source: ByteSource): void {
    const { tensors, metadata } = this.parse(file, source);
    Object.assign(this.metadata, metadata);
    for (const t of tensors) this.tensors.set(t.name, t);
  }

  private parse(file: string, source: ByteSource): { tensors: TensorInfo[]; metadata: Record<string, string> } {
    this.sources.set(file, source);
    return readHeader(source, file);
  }

  /**
   * Add the tensors a parsed model.safetensors.index.json maps to its shards; `shard(name)` gives the file name
   * (for TensorInfo and errors) and the bytes of a shard, or undefined when it is missing.
   */
  addIndex(indexFile: string, index: unknown, shard: (name: string) => { file: string; source: ByteSource } | undefined): void {
    if (!isPlainObject(index) || !isPlainObject(index.weight_map)) throw fileError(indexFile, 'has no "weight_map" object');
    if (isPlainObject(index.metadata)) {
      for (const [k, v] of Object.entries(index.metadata)) if (typeof v === 'string' || typeof v === 'number') this.metadata[k] = String(v);
    }
    const byShard = new Map<string, string[]>();
    for (const [name, shardName] of Object.entries(index.weight_map)) {
      if (typeof shardName !== 'string' || shardName === '' || shardName.startsWith('/') || /^[A-Za-z]:[\\/]/.test(shardName)) {
        throw fileError(indexFile, `weight_map entry for ${JSON.stringify(name)} is not a relative file name`);
      }
      const names = byShard.get(shardName) ?? [];
      names.push(name);
      byShard.set(shardName, names);
    }
    for (const [shardName, names] of byShard) {
      const found = shard(shardName);
      if (!found) throw fileError(indexFile, `shard ${shardName} (holding ${JSON.stringify(names[0])}) is missing`);
      const { tensors, metadata } = this.parse(found.file, found.source);
      for (const [k, v] of Object.entries(metadata)) this.metadata[k] ??= v;
      const inShard = new Map(tensors.map((t) => [t.name, t]));
      for (const name of names) {
        const t = inShard.get(name);
        if (!t) throw fileError(indexFile, `tensor ${JSON.stringify(name)} is mapped to ${shardName} but that shard does not contain it`);
        this.tensors.set(name, t);
      }
    }
  }

  /** The tensor's description, or a UserError naming the checkpoint. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw fileError(this.path, `no tensor named ${JSON.stringify(name)}`);
    return t;
  }

  /** Raw bytes of a tensor, or of the byte range [byteStart, byteStart + byteLength) inside it. */
  readBytes(name: string, byteStart = 0, byteLength?: number): Uint8Array {
    const t = this.info(name);
    const length = byteLength ?? t.byteLength - byteStart;
    if (!(byteStart >= 0 && length >= 0 && byteStart + length <= t.byteLength)) {
      throw new RangeError(`${name}: bytes [${byteStart}, ${byteStart + length}) outside the tensor's ${t.byteLength} bytes`);
    }
    const source = this.sources.get(t.file);
    if (source === undefined) throw new Error(`checkpoint ${this.path} is closed`);
    return readExact(source, t.file, t.start + byteStart, length);
  }

  /** A whole tensor as f32 (floats and integers converted). */
  readF32(name: string): Float32Array {
    return bytesToF32(this.info(name).dtype, this.readBytes(name));
  }

  close(): void {
    for (const s of this.sources.values()) s.close?.();
    this.sources.clear();
  }
}

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  data: ArrayBufferView;
}

export type TensorSpec = Omit<TensorToWrite, 'data'>;

function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The 8-byte length and the JSON header (space-padded so the data starts 8-byte aligned, as the reference writer does). */
export function safetensorsHeader(specs: TensorSpec[], metadata?: Record<string, string>): { header: Uint8Array; dataBytes: number } {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  let offset = 0;
  for (const s of specs) {
    if (Object.hasOwn(header, s.name)) throw new Error(`tensor ${s.name} given twice`);
    const bytes = elementCount(s.shape) * DTYPE_BYTES[s.dtype];
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return { header: head, dataBytes: offset };
}

/** Throw when a tensor's data does not have the bytes its dtype and shape need. */
export function checkTensorData(t: TensorToWrite): void {
  const expected = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
  if (t.data.byteLength !== expected) throw new Error(`${t.name}: ${t.data.byteLength} bytes for ${t.dtype} ${JSON.stringify(t.shape)} (expected ${expected})`);
}

/** A whole safetensors file in memory (tensors in the given order). */
export function serializeSafetensors(tensors: TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  for (const t of tensors) checkTensorData(t);
  const { header, dataBytes } = safetensorsHeader(tensors, metadata);
  const out = new Uint8Array(header.byteLength + dataBytes);
  out.set(header);
  let offset = header.byteLength;
  for (const t of tensors) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), offset);
    offset += t.data.byteLength;
  }
  return out;
}
