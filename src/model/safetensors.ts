// Safetensors files on disk (Node): checkpoints opened by path and read by partial reads on an open file
// descriptor, and writers that stream tensor data to a file. The format itself (header parsing, conversion,
// serialization) is in safetensors-format.ts, which the browser uses too; it is re-exported from here.
import { closeSync, existsSync, fstatSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileError } from '../errors.js';
import { checkTensorData, safetensorsHeader, SafetensorsReader, type ByteSource, type TensorSpec, type TensorToWrite } from './safetensors-format.js';
import { readJsonFile } from '../json-file.js';

export * from './safetensors-format.js';

/** An open file as a byte source; `close()` closes the descriptor. */
export function fileSource(file: string): ByteSource {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw fileError(file, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return {
    size: fstatSync(fd).size,
    read(offset, length) {
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, out, done, length - done, offset + done);
        if (n === 0) return out.subarray(0, done);
        done += n;
      }
      return out;
    },
    close: () => closeSync(fd),
  };
}

/** Add the shards a model.safetensors.index.json on disk names. */
function addIndexFile(reader: SafetensorsReader, indexFile: string): void {
  const index = readJsonFile(indexFile);
  const dir = dirname(indexFile);
  reader.addIndex(indexFile, index, (shard) => {
    const file = join(dir, shard);
    return existsSync(file) ? { file, source: fileSource(file) } : undefined;
  });
}

/** One safetensors checkpoint on disk: a single file, or the shards named by a model.safetensors.index.json. */
export class Checkpoint extends SafetensorsReader {
  /** Open a .safetensors file, a folder with model.safetensors, or a folder with model.safetensors.index.json. */
  static open(path: string): Checkpoint {
    if (!existsSync(path)) throw fileError(path, 'no such file or folder');
    const ckpt = new Checkpoint(path);
    try {
      if (!statSync(path).isDirectory()) ckpt.addFile(path, fileSource(path));
      else if (existsSync(join(path, 'model.safetensors.index.json'))) addIndexFile(ckpt, join(path, 'model.safetensors.index.json'));
      else if (existsSync(join(path, 'model.safetensors'))) ckpt.addFile(join(path, 'model.safetensors'), fileSource(join(path, 'model.safetensors')));
      else throw fileError(path, 'folder has neither model.safetensors nor model.safetensors.index.json');
    } catch (e) {
      ckpt.close();
      throw e;
    }
    return ckpt;
  }
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
    let head: Uint8Array;
    try {
      const h = safetensorsHeader(specs, metadata);
      head = h.header;
      this.totalBytes = h.dataBytes;
    } catch (e) {
      throw new Error(`${path}: ${(e as Error).message}`);
    }
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
  for (const t of tensors) checkTensorData(t);
  const writer = new SafetensorsStreamWriter(path, tensors, metadata);
  try {
    for (const t of tensors) writer.write(t.data);
  } catch (e) {
    writer.abort();
    throw e;
  }
  writer.finish();
}
