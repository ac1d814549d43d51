// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON describing each tensor
// (dtype, shape, data_offsets relative to the end of the header), then the raw little-endian data.
// Reading is by partial reads on an open file descriptor so multi-GB checkpoints are never held whole.
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
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

/** Read exactly `length` bytes at `position`, or throw when the file is shorter. */
function readExact(fd: number, file: string, position: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, length - done, position + done);
    if (n === 0) throw fileError(file, `unexpected end of file reading ${length} bytes at offset ${position}`);
    done += n;
  }
  return out;
}

/** Parse and validate the header of one open safetensors file. */
function readHeader(fd: number, file: string): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) throw fileError(file, `not a safetensors file: ${fileSize} bytes, shorter than the 8-byte header length`);
  const lengthBytes = readExact(fd, file, 0, 8);
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) throw fileError(file, `not a safetensors file: header length ${headerLength} is absurd (> ${MAX_HEADER_BYTES})`);
  const n = Number(headerLength);
  if (8 + n > fileSize) throw fileError(file, `truncated safetensors file: header length ${n} goes beyond the file size ${fileSize}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readExact(fd, file, 8, n)));
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

/** One safetensors checkpoint: a single file, or the shards named by a model.safetensors.index.json. */
export class Checkpoint {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  private readonly fds = new Map<string, number>();

  private constructor(
    /** What was opened (file or folder), for error messages. */
    readonly path: string,
  ) {}

  /** Open a .safetensors file, a folder with model.safetensors, or a folder with model.safetensors.index.json. */
  static open(path: string): Checkpoint {
    if (!existsSync(path)) throw fileError(path, 'no such file or folder');
    const ckpt = new Checkpoint(path);
    try {
      if (!statSync(path).isDirectory()) ckpt.addFile(path);
      else if (existsSync(join(path, 'model.safetensors.index.json'))) ckpt.addIndex(join(path, 'model.safetensors.index.json'));
      else if (existsSync(join(path, 'model.safetensors'))) ckpt.addFile(join(path, 'model.safetensors'));
      else throw fileError(path, 'folder has neither model.safetensors nor model.safetensors.index.json');
    } catch (e) {
      ckpt.close();
      throw e;
    }
    return ckpt;
  }

  private openFile(file: string): { fd: number; tensors: TensorInfo[]; metadata: Record<string, string> } {
    let fd = this.fds.get(file);
    if (fd === undefined) {
      try {
        fd = openSync(file, 'r');
      } catch (e) {
        throw fileError(file, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      this.fds.set(file, fd);
    }
    return { fd, ...readHeader(fd, file) };
  }

  private addFile(file: string): void {
    const { tensors, metadata } = this.openFile(file);
    Object.assign(this.metadata, metadata);
    for (const t of tensors) this.tensors.set(t.name, t);
  }

  private addIndex(indexFile: string): void {
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexFile, 'utf8'));
    } catch (e) {
      throw fileError(indexFile, `not valid JSON (${(e as Error).message})`);
    }
    if (!isPlainObject(index) || !isPlainObject(index.weight_map)) throw fileError(indexFile, 'has no "weight_map" object');
    if (isPlainObject(index.metadata)) {
      for (const [k, v] of Object.entries(index.metadata)) if (typeof v === 'string' || typeof v === 'number') this.metadata[k] = String(v);
    }
    const byShard = new Map<string, string[]>();
    for (const [name, shard] of Object.entries(index.weight_map)) {
      if (typeof shard !== 'string' || shard === '' || isAbsolute(shard)) throw fileError(indexFile, `weight_map entry for ${JSON.stringify(name)} is not a relative file name`);
      const names = byShard.get(shard) ?? [];
      names.push(name);
      byShard.set(shard, names);
    }
    const dir = dirname(indexFile);
    for (const [shard, names] of byShard) {
      const file = join(dir, shard);
      if (!existsSync(file)) throw fileError(indexFile, `shard ${shard} (holding ${JSON.stringify(names[0])}) is missing`);
      const { tensors, metadata } = this.openFile(file);
      for (const [k, v] of Object.entries(metadata)) this.metadata[k] ??= v;
      const inShard = new Map(tensors.map((t) => [t.name, t]));
      for (const name of names) {
        const t = inShard.get(name);
        if (!t) throw fileError(indexFile, `tensor ${JSON.stringify(name)} is mapped to ${shard} but that shard does not contain it`);
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
    const fd = this.fds.get(t.file);
    if (fd === undefined) throw new Error(`checkpoint ${this.path} is closed`);
    return readExact(fd, t.file, t.start + byteStart, length);
  }

  /** A whole tensor as f32 (floats and integers converted). */
  readF32(name: string): Float32Array {
    return bytesToF32(this.info(name).dtype, this.readBytes(name));
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
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

/**
 * Writes a safetensors file whose header is known up front and whose tensor data arrives in pieces, so a
 * large checkpoint can be generated without holding it in memory. Writes `path + '.tmp'` and renames it into
 * place in `finish()`; `abort()` removes the partial file.
 */
export class SafetensorsStreamWriter {
  private readonly fd: number;
  private readonly tmp: string;
  private readonly totalBytes: number;
  private written = 0;

  constructor(
    readonly path: string,
    specs: TensorSpec[],
    metadata?: Record<string, string>,
  ) {
    const header: Record<string, unknown> = {};
    if (metadata && Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
    let offset = 0;
    for (const s of specs) {
      if (Object.hasOwn(header, s.name)) throw new Error(`${path}: tensor ${s.name} given twice`);
      const bytes = elementCount(s.shape) * DTYPE_BYTES[s.dtype];
      header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
    }
    this.totalBytes = offset;
    const json = new TextEncoder().encode(JSON.stringify(header));
    // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    const padded = Math.ceil(json.byteLength / 8) * 8;
    const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
    new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
    head.set(json, 8);
    this.tmp = `${path}.tmp`;
    this.fd = openSync(this.tmp, 'w');
    try {
      this.writeAll(head);
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  private writeAll(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(this.fd, bytes, done, bytes.byteLength - done);
  }

  /** Append the next bytes of tensor data (tensors in header order, each in as many pieces as wanted). */
  write(data: ArrayBufferView): void {
    if (this.written + data.byteLength > this.totalBytes) throw new Error(`${this.path}: more tensor data than the header describes`);
    this.writeAll(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.written += data.byteLength;
  }

  finish(): void {
    if (this.written !== this.totalBytes) {
      this.abort();
      throw new Error(`${this.path}: ${this.written} bytes of tensor data written, header describes ${this.totalBytes}`);
    }
    closeSync(this.fd);
    renameSync(this.tmp, this.path);
  }

  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    if (existsSync(this.tmp)) unlinkSync(this.tmp);
  }
}

/** Write tensors (in the given order) to a safetensors file. */
export function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  for (const t of tensors) {
    const expected = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== expected) throw new Error(`${t.name}: ${t.data.byteLength} bytes for ${t.dtype} ${JSON.stringify(t.shape)} (expected ${expected})`);
  }
  const writer = new SafetensorsStreamWriter(path, tensors, metadata);
  try {
    for (const t of tensors) writer.write(t.data);
  } catch (e) {
    writer.abort();
    throw e;
  }
  writer.finish();
}
