// Scratch buffers shared by the dispatches of one program: its dispatches run one after another, so a buffer
// that one launcher fills and reads within its own dispatches can serve every launch of the same kind and size.
import type { Program } from '../gpu/program.js';

const buffers = new WeakMap<Program, Map<string, GPUBuffer>>();

/** The program's scratch buffer for `purpose` of `bytes` bytes, made on first use. */
export function programScratch(prog: Program, purpose: string, bytes: number): GPUBuffer {
  let mine = buffers.get(prog);
  if (!mine) buffers.set(prog, (mine = new Map()));
  const key = `${purpose} ${bytes}`;
  let buf = mine.get(key);
  if (!buf) mine.set(key, (buf = prog.gpu.storage(bytes, purpose)));
  return buf;
}
