// GGUF files on disk: the encoding (gguf-encoder.ts, re-exported) streamed into a file that appears under its
// final name only when complete (temp file + rename).
import { open, rename, unlink } from 'node:fs/promises';
import { writeGgufTo, type GgufWriteOptions } from './gguf-encoder.js';

export * from './gguf-encoder.js';

/** Chunks being written at once while the exporter converts the next. */
const WRITES_IN_FLIGHT = 2;

/** Write a GGUF file to `path`: to `path.tmp` first, renamed when every byte is written. */
export async function writeGguf(path: string, o: GgufWriteOptions): Promise<void> {
  const tmp = `${path}.tmp`;
  const file = await open(tmp, 'w');
  let ok = false;
  try {
    // Write-behind: the next chunk is converted while the last ones are written (at their own positions, so the
    // writes may finish in any order); at most WRITES_IN_FLIGHT wait at once.
    const pending: Promise<unknown>[] = [];
    let position = 0;
    await writeGgufTo({
      write: async (bytes) => {
        const written = file.write(bytes, 0, bytes.length, position);
        // Awaited below; a failure must not count as unhandled meanwhile.
        written.catch(() => undefined);
        pending.push(written);
        position += bytes.length;
        if (pending.length > WRITES_IN_FLIGHT) await pending.shift();
      },
    }, o);
    for (const w of pending) await w;
    await file.sync();
    ok = true;
  } finally {
    await file.close();
    if (!ok) await unlink(tmp).catch(() => undefined);
  }
  await rename(tmp, path);
}
