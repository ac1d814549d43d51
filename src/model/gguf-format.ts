// Reading GGUF files (ggml/docs/gguf.md, versions 2 and 3, little-endian): the header's typed metadata and tensor
// infos, then each tensor's bytes on demand. No Node API (the browser demo reads a dropped file through the
// same ByteSource as safetensors). Our own reader rather than @huggingface/gguf: that package reads through
// fetch or whole files and returns no random access to tensor data, which the loader needs part by part; the
// format is small, and the encoder (gguf/gguf-encoder.ts) shares these type codes.
import { fileError } from '../errors.js';
import { GgmlType, ggmlTensorBytes, ggmlTypeName, isKnownGgmlType } from '../gpu/ggml-types.js';
import type { ByteSource } from './safetensors-format.js';

/** llama.cpp's token types (gguf-py TokenType), the values of tokenizer.ggml.token_type. */
export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** A metadata value as read: numbers (64-bit integers as numbers), booleans, strings, or arrays of them. */
export type GgufMetaValue = number | boolean | string | (number | boolean | string)[];

export interface GgufTensor {
  name: string;
  /** ggml dims: ne[0] is the row length (the HF shape reversed). */
  ne: number[];
  type: GgmlType;
  /** Absolute byte offset of the data in the file, and its length. */
  offset: number;
  bytes: number;
}

export interface GgufFile {
  path: string;
  version: number;
  metadata: Map<string, GgufMetaValue>;
  tensors: Map<string, GgufTensor>;
  source: ByteSource;
}

/** Sequential reads over a ByteSource, one buffered window at a time (the header of a 150k-token vocabulary is MBs). */
class Cursor {
  private buf = new Uint8Array(0);
  private bufStart = 0;
  pos = 0;
  private readonly text = new TextDecoder('utf-8', { fatal: true });
  constructor(private readonly source: ByteSource, private readonly path: string) {}

  private take(n: number): DataView {
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
      if (this.pos + n > this.source.size) throw fileError(this.path, `unexpected end of file reading the GGUF header at offset ${this.pos}`);
      this.buf = this.source.read(this.pos, Math.min(this.source.size - this.pos, Math.max(n, 1 << 20))).slice();
      this.bufStart = this.pos;
    }
    const view = new DataView(this.buf.buffer, this.buf.byteOffset + (this.pos - this.bufStart), n);
    this.pos += n;
    return view;
  }

  u8(): number { return this.take(1).getUint8(0); }
  u32(): number { return this.take(4).getUint32(0, true); }
  u64(): number {
    const v = this.take(8).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fileError(this.path, `a 64-bit value in the GGUF header is too large (${v}) at offset ${this.pos - 8}`);
    return Number(v);
  }

  string(): string {
    const n = this.u64();
    if (n > this.source.size) throw fileError(this.path, `a GGUF string claims ${n} bytes at offset ${this.pos - 8}, more than the file`);
    const view = this.take(n);
    try {
      return this.text.decode(new Uint8Array(view.buffer, view.byteOffset, n));
    } catch {
      throw fileError(this.path, `a GGUF string at offset ${this.pos - n} is not UTF-8`);
    }
  }

  scalar(type: GgufValueType): number | boolean | string {
    switch (type) {
      case GgufValueType.UINT8: return this.u8();
      case GgufValueType.INT8: return this.take(1).getInt8(0);
      case GgufValueType.UINT16: return this.take(2).getUint16(0, true);
      case GgufValueType.INT16: return this.take(2).getInt16(0, true);
      case GgufValueType.UINT32: return this.u32();
      case GgufValueType.INT32: return this.take(4).getInt32(0, true);
      case GgufValueType.FLOAT32: return this.take(4).getFloat32(0, true);
      case GgufValueType.BOOL: return this.u8() !== 0;
      case GgufValueType.STRING: return this.string();
      case GgufValueType.UINT64: return this.u64();
      case GgufValueType.INT64: return Number(this.take(8).getBigInt64(0, true));
      case GgufValueType.FLOAT64: return this.take(8).getFloat64(0, true);
      default: throw fileError(this.path, `unknown GGUF value type ${type} at offset ${this.pos - 4}`);
    }
  }

  value(type: GgufValueType): GgufMetaValue {
    if (type !== GgufValueType.ARRAY) return this.scalar(type);
    const itemType = this.u32();
    if (itemType === GgufValueType.ARRAY) throw fileError(this.path, `nested GGUF arrays are not supported (offset ${this.pos - 4})`);
    const n = this.u64();
    if (n > this.source.size) throw fileError(this.path, `a GGUF array claims ${n} items at offset ${this.pos - 8}, more than the file`);
    const out: (number | boolean | string)[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.scalar(itemType);
    return out;
  }
}

/** Parse the header of a GGUF file; tensor data stays in the source. Throws a UserError naming `path`. */
export function readGguf(source: ByteSource, path: string): GgufFile {
  if (source.size < 24) throw fileError(path, `not a GGUF file: ${source.size} bytes`);
  const c = new Cursor(source, path);
  if (c.u32() !== GGUF_MAGIC) throw fileError(path, 'not a GGUF file (no GGUF magic at the start)');
  const version = c.u32();
  if (version !== 2 && version !== 3) throw fileError(path, `GGUF version ${version} is not supported (2 or 3; a big-endian file reads as a huge version)`);
  const tensorCount = c.u64();
  const kvCount = c.u64();
  const metadata = new Map<string, GgufMetaValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string();
    metadata.set(key, c.value(c.u32()));
  }
  const infos: { name: string; ne: number[]; type: number; rel: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string();
    const nDims = c.u32();
    if (nDims > 4) throw fileError(path, `tensor ${name} has ${nDims} dimensions (at most 4)`);
    const ne = Array.from({ length: nDims }, () => c.u64());
    infos.push({ name, ne, type: c.u32(), rel: c.u64() });
  }
  const alignment = metadata.get('general.alignment') ?? GGUF_DEFAULT_ALIGNMENT;
  if (typeof alignment !== 'number' || alignment <= 0) throw fileError(path, `general.alignment is ${JSON.stringify(alignment)}`);
  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensor>();
  for (const t of infos) {
    if (!isKnownGgmlType(t.type)) throw fileError(path, `tensor ${t.name} has ggml type ${t.type}, which loraforge does not read (F32, F16, BF16, Q4_0, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)`);
    let bytes: number;
    try {
      bytes = ggmlTensorBytes(t.type, t.ne);
    } catch {
      throw fileError(path, `tensor ${t.name} has rows of ${t.ne[0]} values, not whole ${ggmlTypeName(t.type)} blocks`);
    }
    const offset = dataStart + t.rel;
    if (offset + bytes > source.size) throw fileError(path, `tensor ${t.name} ends at byte ${offset + bytes}, past the end of the file (${source.size} bytes): truncated?`);
    if (tensors.has(t.name)) throw fileError(path, `tensor ${t.name} appears twice`);
    tensors.set(t.name, { name: t.name, ne: t.ne, type: t.type, offset, bytes });
  }
  return { path, version, metadata, tensors, source };
}

/** The bytes of tensor `t`, or `length` of them from byte `start` within it. */
export function readGgufTensorBytes(f: GgufFile, t: GgufTensor, start = 0, length = t.bytes - start): Uint8Array {
  const bytes = f.source.read(t.offset + start, length);
  if (bytes.length !== length) throw fileError(f.path, `unexpected end of file reading tensor ${t.name}`);
  return bytes;
}

/** A metadata value of the expected kind, or a UserError naming the key. */
export function ggufNumber(f: GgufFile, key: string): number;
export function ggufNumber(f: GgufFile, key: string, fallback: number): number;
export function ggufNumber(f: GgufFile, key: string, fallback?: number): number {
  const v = f.metadata.get(key);
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number') throw fileError(f.path, v === undefined ? `metadata ${key} is missing` : `metadata ${key} is ${JSON.stringify(v)}, expected a number`);
  return v;
}

export function ggufString(f: GgufFile, key: string): string | undefined {
  const v = f.metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw fileError(f.path, `metadata ${key} is not a string`);
  return v;
}
