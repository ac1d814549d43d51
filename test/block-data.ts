// Test data in ggml block formats.
import { f32ToF16 } from '../src/gpu/dtype.js';
import { blockLayout, type GgmlType } from '../src/gpu/ggml-types.js';
import { rng } from './helpers.js';

/** Blocks of random bytes whose f16 fields (named in the layout) hold finite values of either sign. */
export function randomBlocks(type: GgmlType, blocks: number, seed: number, scale = 0.01): Uint8Array {
  const r = rng(seed);
  const layout = blockLayout(type);
  const bytes = new Uint8Array(blocks * layout.bytes);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(r() * 256);
  const f16Fields = (['d', 'dmin', 'm'] as const).filter((f) => f in layout.at);
  for (let b = 0; b < blocks; b++) {
    for (const f of f16Fields) {
      const h = f32ToF16((r() * 2 - 1) * scale);
      const at = b * layout.bytes + (layout.at as Record<string, number>)[f]!;
      bytes[at] = h & 0xff;
      bytes[at + 1] = h >>> 8;
    }
  }
  return bytes;
}
