// Token embedding lookup: out[n, :] = table[ids[n], :]. The table is a row-split GpuMatrix (f32 or bf16), so there
// is one dispatch per part, and each writes only the tokens whose id falls in its rows.
import { wgslWeightArray, wgslWeightLoad, type GpuMatrix, type WeightDType } from '../gpu/matrix.js';
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

export function embeddingWgsl(dtype: WeightDType): string {
  return /* wgsl */ `
struct Params { n: u32, h: u32, rowStart: u32, rows: u32 }
@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> table: ${wgslWeightArray(dtype)};
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${wgslWeightLoad(dtype, 'tableAt', 'table')}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
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
  const code = embeddingWgsl(a.table.dtype);
  const h = a.table.cols;
  for (const part of a.table.parts) {
    const params = prog.gpu.uniform([['u32', a.N], ['u32', h], ['u32', part.rowStart], ['u32', part.rows]]);
    prog.add(`${label}[${part.rowStart}]`, code, [a.ids, part.buffer, a.out, params], grid(Math.ceil((a.N * h) / WG)));
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
