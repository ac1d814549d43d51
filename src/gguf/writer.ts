// GGUF files on disk: the encoding (gguf-encoder.ts, re-exported) streamed into a file that appears under its
// final name only when complete (temp file + rename).
import { open, rename, unlink } from 'node:fs/promises';
import { writeGgufTo, type GgufWriteOptions } from './gguf-encoder.js';

export * from './gguf-encoder.js';

/** Write a GGUF file to `path`: to `path.tmp` first, renamed when every byte is written. */
export async function writeGguf(path: string, o: GgufWriteOptions): Promise<void> {
  const tmp = `${path}.tmp`;
  const file = await open(tmp, 'w');
  let ok = false;
  try {
    await writeGgufTo({ write: async (bytes) => void (await file.write(bytes)) }, o);
    await file.sync();
    ok = true;
  } finally {
    await file.close();
    if (!ok) await unlink(tmp).catch(() => undefined);
  }
  await rename(tmp, path);
}
