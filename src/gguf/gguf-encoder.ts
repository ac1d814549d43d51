// GGUF v3 encoding (ggml/docs/gguf.md): header, typed key/value metadata, tensor infos, then each
// tensor's data at an aligned offset. Tensor data is streamed: the header is written first and each
// tensor's bytes are produced (and can be dropped) one chunk at a time, so a model is never held
// whole in memory. No Node API here: the bytes go to any sink (the browser demo collects them in a Blob);
// writer.ts writes them to a file.
import { GgmlType, ggmlTensorBytes } from '../gpu/ggml-types.js';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufValueType } from '../model/gguf-format.js';

export { GgufValueType };

export type GgufScalarType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'bool' | 'string' | 'u64' | 'i64' | 'f64';
type GgufScalar = number | bigint | boolean | string;

/** One metadata value with its GGUF type. 64-bit integers accept number or bigint. */
export type GgufValue =
  | { type: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64'; value: number }
  | { type: 'u64' | 'i64'; value: number | bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; itemType: GgufScalarType; value: readonly GgufScalar[] };

const SCALAR_CODES: Record<GgufScalarType, GgufValueType> = {
  u8: GgufValueType.UINT8,
  i8: GgufValueType.INT8,
  u16: GgufValueType.UINT16,
  i16: GgufValueType.INT16,
  u32: GgufValueType.UINT32,
  i32: GgufValueType.INT32,
  f32: GgufValueType.FLOAT32,
  bool: GgufValueType.BOOL,
  string: GgufValueType.STRING,
  u64: GgufValueType.UINT64,
  i64: GgufValueType.INT64,
  f64: GgufValueType.FLOAT64,
};

/** Convenience constructors for metadata values. */
export const gv = {
  u8: (value: number): GgufValue => ({ type: 'u8', value }),
  i8: (value: number): GgufValue => ({ type: 'i8', value }),
  u16: (value: number): GgufValue => ({ type: 'u16', value }),
  i16: (value: number): GgufValue => ({ type: 'i16', value }),
  u32: (value: number): GgufValue => ({ type: 'u32', value }),
  i32: (value: number): GgufValue => ({ type: 'i32', value }),
  u64: (value: number | bigint): GgufValue => ({ type: 'u64', value }),
  i64: (value: number | bigint): GgufValue => ({ type: 'i64', value }),
  f32: (value: number): GgufValue => ({ type: 'f32', value }),
  f64: (value: number): GgufValue => ({ type: 'f64', value }),
  bool: (value: boolean): GgufValue => ({ type: 'bool', value }),
  str: (value: string): GgufValue => ({ type: 'string', value }),
  array: (itemType: GgufScalarType, value: readonly GgufScalar[]): GgufValue => ({ type: 'array', itemType, value }),
};

export { GGUF_DEFAULT_ALIGNMENT };
const GGUF_VERSION = 3;

/** A tensor to write: its GGUF name, ggml dims (ne[0] = row length, i.e. HF shape reversed) and type. */
export interface GgufTensorInfo {
  name: string;
  ne: number[];
  type: GgmlType;
}

/** Tensor bytes, produced when the writer reaches the tensor: one buffer or a sequence of chunks. */
export type TensorBytes = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

export interface GgufTensorToWrite extends GgufTensorInfo {
  data: () => TensorBytes | Promise<TensorBytes>;
}

export interface GgufWriteOptions {
  /** Keys in the order they are written. A `general.alignment` entry (u32) sets the alignment. */
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorToWrite[];
  /** Called after each written chunk with the tensor-data bytes done and the total. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** Growable little-endian byte buffer for the header. */
class ByteSink {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private static readonly text = new TextEncoder();

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void { this.reserve(1); this.view.setUint8(this.length, v); this.length += 1; }
  i8(v: number): void { this.reserve(1); this.view.setInt8(this.length, v); this.length += 1; }
  u16(v: number): void { this.reserve(2); this.view.setUint16(this.length, v, true); this.length += 2; }
  i16(v: number): void { this.reserve(2); this.view.setInt16(this.length, v, true); this.length += 2; }
  u32(v: number): void { this.reserve(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v: number): void { this.reserve(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  f32(v: number): void { this.reserve(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  f64(v: number): void { this.reserve(8); this.view.setFloat64(this.length, v, true); this.length += 8; }
  u64(v: number | bigint): void { this.reserve(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8; }
  i64(v: number | bigint): void { this.reserve(8); this.view.setBigInt64(this.length, BigInt(v), true); this.length += 8; }

  string(s: string): void {
    // UTF-8 straight into the buffer (at most 3 bytes per UTF-16 unit), its length in front: the 150K tokens and
    // merges of a vocabulary, without a temporary array each.
    this.reserve(8 + 3 * s.length);
    const { written } = ByteSink.text.encodeInto(s, this.buf.subarray(this.length + 8));
    this.view.setUint32(this.length, written, true);
    this.view.setUint32(this.length + 4, 0, true);
    this.length += 8 + written;
  }

  padTo(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment;
    this.reserve(pad);
    this.buf.fill(0, this.length, this.length + pad);
    this.length += pad;
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

function checkInt(key: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`GGUF metadata ${key}: ${v} is out of range [${lo}, ${hi}]`);
  return v;
}

function writeScalar(out: ByteSink, key: string, type: GgufScalarType, v: GgufScalar): void {
  const expect = (kind: string): never => {
    throw new Error(`GGUF metadata ${key}: ${type} needs a ${kind}, got ${typeof v}`);
  };
  if (type === 'string') return typeof v === 'string' ? out.string(v) : expect('string');
  if (type === 'bool') return typeof v === 'boolean' ? out.u8(v ? 1 : 0) : expect('boolean');
  if (type === 'u64' || type === 'i64') {
    if (typeof v !== 'number' && typeof v !== 'bigint') return expect('number or bigint');
    return type === 'u64' ? out.u64(v) : out.i64(v);
  }
  if (typeof v !== 'number') return expect('number');
  switch (type) {
    case 'u8': return out.u8(checkInt(key, v, 0, 0xff));
    case 'i8': return out.i8(checkInt(key, v, -0x80, 0x7f));
    case 'u16': return out.u16(checkInt(key, v, 0, 0xffff));
    case 'i16': return out.i16(checkInt(key, v, -0x8000, 0x7fff));
    case 'u32': return out.u32(checkInt(key, v, 0, 0xffffffff));
    case 'i32': return out.i32(checkInt(key, v, -0x80000000, 0x7fffffff));
    case 'f32': return out.f32(v);
    case 'f64': return out.f64(v);
  }
}

function writeValue(out: ByteSink, key: string, value: GgufValue): void {
  if (value.type === 'array') {
    out.u32(GgufValueType.ARRAY);
    out.u32(SCALAR_CODES[value.itemType]);
    out.u64(value.value.length);
    for (const item of value.value) writeScalar(out, key, value.itemType, item);
  } else {
    out.u32(SCALAR_CODES[value.type]);
    writeScalar(out, key, value.type, value.value);
  }
}

function alignmentOf(metadata: Map<string, GgufValue>): number {
  const a = metadata.get('general.alignment');
  if (a === undefined) return GGUF_DEFAULT_ALIGNMENT;
  if (a.type !== 'u32' || a.value <= 0 || a.value % 8 !== 0) {
    throw new Error(`general.alignment must be a u32 multiple of 8, got ${JSON.stringify(a)}`);
  }
  return a.value;
}

const padLength = (n: number, alignment: number): number => (alignment - (n % alignment)) % alignment;

/** Serialize header, metadata and tensor infos (padded to the alignment); offsets of each tensor's data. */
export function encodeGgufHeader(metadata: Map<string, GgufValue>, tensors: readonly GgufTensorInfo[]): { header: Uint8Array; offsets: number[]; dataBytes: number } {
  const alignment = alignmentOf(metadata);
  const out = new ByteSink();
  out.u32(GGUF_MAGIC);
  out.u32(GGUF_VERSION);
  out.u64(tensors.length);
  out.u64(metadata.size);
  for (const [key, value] of metadata) {
    out.string(key);
    writeValue(out, key, value);
  }
  const offsets: number[] = [];
  let offset = 0;
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`duplicate GGUF tensor name ${t.name}`);
    names.add(t.name);
    if (t.ne.length < 1 || t.ne.length > 4) throw new Error(`${t.name}: GGUF tensors have 1 to 4 dims, got ${t.ne.length}`);
    out.string(t.name);
    out.u32(t.ne.length);
    for (const d of t.ne) out.u64(d);
    out.u32(t.type);
    out.u64(offset);
    offsets.push(offset);
    const size = ggmlTensorBytes(t.type, t.ne);
    offset += size + padLength(size, alignment);
  }
  out.padTo(alignment);
  return { header: out.bytes(), offsets, dataBytes: offset };
}

async function* chunksOf(bytes: TensorBytes): AsyncIterable<Uint8Array> {
  if (bytes instanceof Uint8Array) yield bytes;
  else yield* bytes;
}

/** Where GGUF bytes go, in order. */
export interface GgufSink {
  write(bytes: Uint8Array): void | Promise<void>;
}

/** Stream a whole GGUF (header, then each tensor's data padded to the alignment) into `sink`. */
export async function writeGgufTo(sink: GgufSink, o: GgufWriteOptions): Promise<void> {
  const alignment = alignmentOf(o.metadata);
  const { header, dataBytes } = encodeGgufHeader(o.metadata, o.tensors);
  await sink.write(header);
  let done = 0;
  o.onProgress?.(0, dataBytes);
  const zeros = new Uint8Array(alignment);
  for (const t of o.tensors) {
    const expected = ggmlTensorBytes(t.type, t.ne);
    let written = 0;
    for await (const chunk of chunksOf(await t.data())) {
      if (written + chunk.length > expected) throw new Error(`${t.name}: data is longer than the ${expected} bytes its shape and type need`);
      await sink.write(chunk);
      written += chunk.length;
      done += chunk.length;
      o.onProgress?.(done, dataBytes);
    }
    if (written !== expected) throw new Error(`${t.name}: got ${written} bytes of data, its shape and type need ${expected}`);
    const pad = padLength(expected, alignment);
    if (pad > 0) {
      await sink.write(zeros.subarray(0, pad));
      done += pad;
      o.onProgress?.(done, dataBytes);
    }
  }
}
