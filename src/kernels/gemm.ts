// Register-tiled matrix product shared by the weight matmuls (matmul.ts, matmul-input-grad.ts) and the general
// f32 GEMM used for LoRA factors and their gradients: C[M, N] = alpha · op(A) · op(B) + beta · C.
import { isBlockDType, wgslBlockWeightQuad, type MatrixDType } from '../gpu/matrix.js';
import type { Binding, Program } from '../gpu/program.js';

/** Output tile edge per workgroup; each of the 256 invocations computes a 4x4 block of it. */
export const GEMM_TILE = 64;
/** Reduction depth staged in workgroup memory per step (2 tiles x 16 x 64 f32 = 8 KiB; 4 KiB as f16). */
const TILE_K = 16;

/**
 * Where a second product appended to a reduction of length `k` starts: the next multiple of the staged depth,
 * so that no staged tile mixes the two (C = A·Bᵀ + A2·B2ᵀ as one product over [A | A2] and [B | B2]).
 */
export function appendedReductionStart(k: number): number {
  return Math.ceil(k / TILE_K) * TILE_K;
}

/**
 * What a tiled product kernel needs from its caller, in WGSL:
 * - a uniform `p` whose struct has u32 fields M, N, K (output rows, output columns, reduction length);
 * - `fn loadA4(m: u32, k: u32) -> vec4<f32>`: four consecutive elements of the left operand A(m, k), along k
 *   (aRun 'k': A(m, k..k+3)) or along m (aRun 'm': A(m..m+3, k)); zero where out of bounds;
 * - `fn loadB4(n: u32, k: u32) -> vec4<f32>`: likewise for B(n, k), the right operand as [N, K],
 *   along k (bRun 'k') or along n (bRun 'n');
 * - `fn storeC(m: u32, n: u32, v: f32)`: called once per in-bounds output with the reduced value.
 * The run direction is the one that is contiguous in memory, so staging reads are coalesced.
 * Loads always start at k (or m, n) multiples of 4, which lets bf16 loaders read whole u32 pairs and vector
 * loaders read one aligned vec4.
 */
export interface TiledProductSpec {
  declarations: string;
  aRun: 'k' | 'm';
  bRun: 'k' | 'n';
  /** WGSL expression for the reduction length the tile loop covers (default `p.K`). */
  depth?: string;
  /**
   * Stage the tiles in workgroup memory as f16 (needs the shader-f16 feature): half the workgroup memory
   * traffic; the loads and the accumulation stay f32, so only the operands are rounded.
   */
  f16Tiles?: boolean;
}

/** WGSL that stages a 64 x 16 tile of one operand into `tile` (laid out [k][row/4] of vec4 over rows). */
function stageTile(tile: string, load: string, run: 'k' | 'rows', rowStart: string, elem: 'f32' | 'f16'): string {
  if (run === 'k') {
    // Invocation -> (row, 4 consecutive k); scatter the four values down the k axis of the tile.
    return `{
    let r = lid / 4u;
    let kq = (lid % 4u) * 4u;
    let v = vec4<${elem}>(${load}(${rowStart} + r, k0 + kq));
    let slot = r / 4u;
    let lane = r % 4u;
    ${tile}[(kq + 0u) * 16u + slot][lane] = v.x;
    ${tile}[(kq + 1u) * 16u + slot][lane] = v.y;
    ${tile}[(kq + 2u) * 16u + slot][lane] = v.z;
    ${tile}[(kq + 3u) * 16u + slot][lane] = v.w;
  }`;
  }
  // Invocation -> (k, 4 consecutive rows): one vec4 store.
  return `{
    let kk = lid / 16u;
    let q = lid % 16u;
    ${tile}[kk * 16u + q] = vec4<${elem}>(${load}(${rowStart} + q * 4u, k0 + kk));
  }`;
}

// The 4x4 block store written out, so that the accumulators stay in registers (no dynamic indexing).
function storeBlock(): string {
  const lines: string[] = [];
  for (let i = 0; i < 4; i++) {
    const cols = [0, 1, 2, 3].map((j) => `if (n + ${j}u < p.N) { storeC(m + ${i}u, n + ${j}u, acc[${i}].${'xyzw'[j]}); }`);
    lines.push(`  if (m + ${i}u < p.M) {\n    ${cols.join('\n    ')}\n  }`);
  }
  return lines.join('\n');
}

/** The complete kernel source for a product described by `spec`. Dispatch `tiledProductWorkgroups(M, N)`. */
export function tiledProductWgsl(spec: TiledProductSpec): string {
  const elem = spec.f16Tiles ? 'f16' : 'f32';
  const depth = spec.depth ?? 'p.K';
  return /* wgsl */ `${spec.f16Tiles ? 'enable f16;\n' : ''}
${spec.declarations}

// Operand tiles as [k][row / 4]: a vec4 read gives one k step for four consecutive rows (or columns).
var<workgroup> aTile: array<vec4<${elem}>, ${TILE_K * (GEMM_TILE / 4)}>;
var<workgroup> bTile: array<vec4<${elem}>, ${TILE_K * (GEMM_TILE / 4)}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tilesN = (p.N + ${GEMM_TILE - 1}u) / ${GEMM_TILE}u;
  let tile = wid.x + wid.y * nwg.x;
  let m0 = (tile / tilesN) * ${GEMM_TILE}u;
  let n0 = (tile % tilesN) * ${GEMM_TILE}u;
  if (m0 >= p.M) { return; }
  let tx = lid % 16u;
  let ty = lid / 16u;
  // acc[i][j] is output (m0 + 4 ty + i, n0 + 4 tx + j).
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < ${depth}; k0 += ${TILE_K}u) {
    ${stageTile('aTile', 'loadA4', spec.aRun === 'k' ? 'k' : 'rows', 'm0', elem)}
    ${stageTile('bTile', 'loadB4', spec.bRun === 'k' ? 'k' : 'rows', 'n0', elem)}
    workgroupBarrier();
    for (var k = 0u; k < ${TILE_K}u; k++) {
      let a = vec4<f32>(aTile[k * 16u + ty]);
      let b = vec4<f32>(bTile[k * 16u + tx]);
      acc[0] += a.x * b;
      acc[1] += a.y * b;
      acc[2] += a.z * b;
      acc[3] += a.w * b;
    }
    workgroupBarrier();
  }
  let m = m0 + ty * 4u;
  let n = n0 + tx * 4u;
${storeBlock()}
}`;
}

/** Workgroups (to pass through `grid`) that cover an M x N output. */
export function tiledProductWorkgroups(M: number, N: number): number {
  return Math.ceil(M / GEMM_TILE) * Math.ceil(N / GEMM_TILE);
}

/** Where a row-major operand lives in its binding: element (row, col) is at `base + row * stride + col`. */
export interface RowQuadLayout {
  rows: string;
  cols: string;
  stride: string;
  base: string;
}

/**
 * Whether a row-major operand can be read one aligned vec4 (four f32, or four bf16 as a vec2<u32>) at a time:
 * its base offset and row stride, in elements, are multiples of 4, so a quad starting at a column that is a
 * multiple of 4 lies inside one row and on a 16-byte (8-byte for bf16) boundary.
 */
export function quadAligned(...elementOffsets: number[]): boolean {
  return elementOffsets.every((v) => v % 4 === 0);
}

/** WGSL type of a binding read by `wgslRowQuad` with the same dtype and `vector` flag. */
export function wgslQuadArray(dtype: MatrixDType, vector: boolean): string {
  if (isBlockDType(dtype)) return 'array<u32>';
  if (dtype === 'f32') return vector ? 'array<vec4<f32>>' : 'array<f32>';
  return vector ? 'array<vec2<u32>>' : 'array<u32>';
}

/**
 * WGSL `fn <name>(row: u32, col: u32) -> vec4<f32>` reading elements (row, col..col+3) of a row-major operand,
 * zero outside rows x cols. bf16 operands (u32 pairs) need an even `cols`, `stride` and `base` and a `col` that
 * is a multiple of 2, so that each pair of values is one word read and unpacked in registers. With `vector`
 * (only where `quadAligned(base, stride)` holds, and for `col` multiples of 4), the quad is one load, masked
 * past `cols`; the array is then declared as `wgslQuadArray(dtype, true)`. f16 reads as bf16 does. Block formats
 * (whole blocks per row, `col` a multiple of 4) dequantize the quad in registers whatever `vector` says.
 */
export function wgslRowQuad(name: string, array: string, dtype: MatrixDType, l: RowQuadLayout, vector = false): string {
  if (isBlockDType(dtype)) {
    return `${wgslBlockWeightQuad(dtype, `${name}Block`, array)}
fn ${name}(row: u32, col: u32) -> vec4<f32> {
  if (row >= ${l.rows} || col >= ${l.cols}) { return vec4<f32>(); }
  return ${name}Block(${l.base} + row * ${l.stride} + col);
}`;
  }
  // A u32 of two 16-bit values -> vec2<f32> (element 2i in the low half).
  const pair = (w: string) => (dtype === 'f16' ? `unpack2x16float(${w})` : `bitcast<vec2<f32>>(vec2<u32>(${w} << 16u, ${w} & 0xffff0000u))`);
  if (vector) {
    const at = `(${l.base} + row * ${l.stride} + col) >> 2u`;
    const load = dtype === 'f32'
      ? `let v = ${array}[${at}];`
      : `let w = ${array}[${at}];
  let v = vec4<f32>(${pair('w.x')}, ${pair('w.y')});`;
    return `fn ${name}(row: u32, col: u32) -> vec4<f32> {
  if (row >= ${l.rows} || col >= ${l.cols}) { return vec4<f32>(); }
  ${load}
  return select(vec4<f32>(), v, vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(${l.cols}));
}`;
  }
  if (dtype === 'f32') {
    return `fn ${name}(row: u32, col: u32) -> vec4<f32> {
  var v = vec4<f32>();
  if (row < ${l.rows}) {
    let at = ${l.base} + row * ${l.stride} + col;
    if (col < ${l.cols}) { v.x = ${array}[at]; }
    if (col + 1u < ${l.cols}) { v.y = ${array}[at + 1u]; }
    if (col + 2u < ${l.cols}) { v.z = ${array}[at + 2u]; }
    if (col + 3u < ${l.cols}) { v.w = ${array}[at + 3u]; }
  }
  return v;
}`;
  }
  return `fn ${name}(row: u32, col: u32) -> vec4<f32> {
  var v = vec4<f32>();
  if (row < ${l.rows} && col < ${l.cols}) {
    let word = (${l.base} + row * ${l.stride} + col) >> 1u;
    let lo = ${array}[word];
    v = vec4<f32>(${pair('lo')}, 0.0, 0.0);
    if (col + 2u < ${l.cols}) {
      let hi = ${array}[word + 1u];
      v = vec4<f32>(v.xy, ${pair('hi')});
    }
  }
  return v;
}`;
}

interface GemmVariant {
  transA: boolean;
  transB: boolean;
  /** Read A (B) as aligned vec4s: its row length is a multiple of 4. */
  vecA: boolean;
  vecB: boolean;
}

function gemmWgsl({ transA, transB, vecA, vecB }: GemmVariant): string {
  // A(m, k) is a[m, k] ([M, K]) or a[k, m] ([K, M]); B as [N, K] is b[n, k] when transB, else b[k, n] ([K, N]).
  const matrix = (rows: string, cols: string): RowQuadLayout => ({ rows, cols, stride: cols, base: '0u' });
  const loadA = transA
    ? `fn loadA4(m: u32, k: u32) -> vec4<f32> { return quadA(k, m); }\n${wgslRowQuad('quadA', 'a', 'f32', matrix('p.K', 'p.M'), vecA)}`
    : `fn loadA4(m: u32, k: u32) -> vec4<f32> { return quadA(m, k); }\n${wgslRowQuad('quadA', 'a', 'f32', matrix('p.M', 'p.K'), vecA)}`;
  const loadB = transB
    ? `fn loadB4(n: u32, k: u32) -> vec4<f32> { return quadB(n, k); }\n${wgslRowQuad('quadB', 'b', 'f32', matrix('p.N', 'p.K'), vecB)}`
    : `fn loadB4(n: u32, k: u32) -> vec4<f32> { return quadB(k, n); }\n${wgslRowQuad('quadB', 'b', 'f32', matrix('p.K', 'p.N'), vecB)}`;
  return tiledProductWgsl({
    aRun: transA ? 'm' : 'k',
    bRun: transB ? 'k' : 'n',
    declarations: `
struct Params { M: u32, N: u32, K: u32, alpha: f32, beta: u32 }
@group(0) @binding(0) var<storage, read> a: ${wgslQuadArray('f32', vecA)};
@group(0) @binding(1) var<storage, read> b: ${wgslQuadArray('f32', vecB)};
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${loadA}
${loadB}
fn storeC(m: u32, n: u32, v: f32) {
  let i = m * p.N + n;
  // beta is 0 or 1; with 0, C is never read (it may hold garbage or NaN).
  if (p.beta != 0u) { c[i] = p.alpha * v + c[i]; } else { c[i] = p.alpha * v; }
}`,
  });
}

export interface GemmArgs {
  /** [M, K], or [K, M] with transA. */
  a: Binding;
  /** [K, N], or [N, K] with transB. */
  b: Binding;
  /** [M, N]. */
  c: Binding;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: 0 | 1;
  label?: string;
}

/** Append C = alpha · op(A) · op(B) + beta · C. */
export function recordGemm(prog: Program, a: GemmArgs): void {
  if (a.M === 0 || a.N === 0) return;
  const params = prog.gpu.uniform([
    ['u32', a.M], ['u32', a.N], ['u32', a.K], ['f32', a.alpha ?? 1], ['u32', a.beta ?? 0],
  ]);
  const transA = !!a.transA;
  const transB = !!a.transB;
  const code = gemmWgsl({
    transA,
    transB,
    vecA: quadAligned(transA ? a.M : a.K),
    vecB: quadAligned(transB ? a.K : a.N),
  });
  prog.add(a.label ?? 'gemm', code, [a.a, a.b, a.c, params], tiledProductWorkgroups(a.M, a.N));
}

/** Plain-TS reference; `c` is the initial C (used when beta is 1) and is not modified. */
export function gemmRef(
  A: Float32Array,
  B: Float32Array,
  c: Float32Array | undefined,
  M: number,
  N: number,
  K: number,
  opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: 0 | 1 } = {},
): Float32Array {
  const alpha = opts.alpha ?? 1;
  if (opts.beta && !c) throw new Error('gemmRef: beta 1 needs the initial C');
  const out = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const av = opts.transA ? A[k * M + m]! : A[m * K + k]!;
        const bv = opts.transB ? B[n * K + k]! : B[k * N + n]!;
        s += av * bv;
      }
      out[m * N + n] = alpha * s + (opts.beta ? c![m * N + n]! : 0);
    }
  }
  return out;
}
