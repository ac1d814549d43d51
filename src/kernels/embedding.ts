// Token embedding lookup: out[n, :] = table[ids[n], :]. The table is a row-split GpuMatrix (f32 or bf16), so there
// is one dispatch per part, and each writes only the tokens whose id falls in its rows.
import { matrixRowBytes, wgslWeightArray, wgslWeightLoad, type GpuMatrix, type MatrixDType } from '../gpu/matrix.js';
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

function embeddingLayout(dtype: MatrixDType) {
  return kernelLayout({
    ids: storage('array<u32>'),
    table: storage(wgslWeightArray(dtype)),
    out: output(),
    p: uniform({ n: 'u32', h: 'u32', rowStart: 'u32', rows: 'u32' }),
  });
}

export function embeddingWgsl(dtype: MatrixDType): string {
  return /* wgsl */ `
${embeddingLayout(dtype).wgsl}
${wgslWeightLoad(dtype, 'tableAt', 'table')}

${entryWgsl(WG)} {
  let e = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (e >= p.n * p.h) { return; }
  let token = e / p.h;
  let row = ids[token] - p.rowStart; // wraps to a huge value below this part
  if (row >= p.rows) { return; }
  out[e] = tableAt(row * p.h + (e - token * p.h));
}`;
}

export interface EmbeddingArgs {
  /** u32[N] token ids, each < table.rows. */
  ids: Binding;
  /** [V, H] embedding table. */
  table: GpuMatrix;
  /** f32 [N, H]. */
  out: Binding;
  N: number;
}

export function recordEmbedding(prog: Program, a: EmbeddingArgs, label = 'embedding'): void {
  const layout = embeddingLayout(a.table.dtype);
  const code = embeddingWgsl(a.table.dtype);
  const h = a.table.cols;
  for (const part of a.table.parts) {
    const p = { n: a.N, h, rowStart: part.rowStart, rows: part.rows };
    // A gather: no arithmetic beyond unpacking; the ids, up to N table rows of this part, and the output rows.
    const cost = { flops: 0, bytes: 4 * a.N + Math.min(a.N, part.rows) * matrixRowBytes(h, a.table.dtype) + 4 * a.N * h };
    layout.dispatch(prog, `${label}[${part.rowStart}]`, code, { ids: a.ids, table: part.buffer, out: a.out, p }, grid(Math.ceil((a.N * h) / WG)), cost);
  }
}

/** Plain-TS reference: rows of a [V, H] f32 table. */
export function embeddingRef(ids: Uint32Array, table: Float32Array, H: number): Float32Array {
  const out = new Float32Array(ids.length * H);
  ids.forEach((id, n) => {
    if ((id + 1) * H > table.length) throw new Error(`token id ${id} is outside the table`);
    out.set(table.subarray(id * H, (id + 1) * H), n * H);
  });
  return out;
}
