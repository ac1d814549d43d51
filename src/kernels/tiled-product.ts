// Register-tiled matrix product shared by every GEMM-shaped kernel (weight matmuls, their input gradients, the
// general f32 GEMM and the LoRA factor products): C[M, N] = Σ_k A(m, k) · B(n, k), the operands read through
// caller-supplied loaders, the result written through a caller-supplied store.
//
// One workgroup computes a BM x BN output tile (BM = wy·tm, BN = wx·tn); each invocation owns tm x tn outputs
// in registers. The reduction runs in steps of BK = 16: the next step's operand quads are loaded from global
// memory into registers (register prefetch) while the current step is multiplied out of workgroup memory.
// Staging layout: [k][row / 4] vec4 slots, the slot index XOR-swizzled by ((k / 4) mod 4) · 2, so that the 32
// scalar stores a subgroup makes when transposing k-contiguous quads land in 32 different banks, and the vec4
// reads of the multiply stay aligned (the XOR is the same for every invocation at one k: a permutation).
// Operand rows inside M (or N), for a reduction step inside the unmasked range, are read through the caller's
// unmasked loaders; whole output tiles inside M x N store without bounds checks; edge tiles use masked ones.
import { isBlockDType, wgslBlockWeightQuad, type MatrixDType } from '../gpu/matrix.js';
import { entryWgsl } from '../gpu/kernel.js';
import type { Binding } from '../gpu/program.js';

/** The LoRA path fused into a weight matmul: y += scale · t · Bᵀ. */
export interface MatmulLora {
  /** [M, r]: x · Aᵀ, computed before. */
  t: Binding;
  /** [W rows, r] f32: B's rows follow W's, so a row range or a weight part uses the same rows of B. */
  B: Binding;
  r: number;
  scale: number;
}


/** Reduction depth staged in workgroup memory per step. */
export const TILE_K = 16;

/** Threads and outputs per thread of one tiled-product variant. */
export interface TileConfig {
  /** Outputs per invocation along M and along N. */
  tm: 4 | 8;
  tn: 4 | 8;
  /** Invocations along M and along N (wy · wx of 64, 128 or 256). */
  wy: number;
  wx: number;
  /** Stage tiles in workgroup memory as f16 (needs shader-f16); loads and accumulation stay f32. */
  f16?: boolean;
}

/** The tile shapes the kernels choose among (tuning times them; `tileName` names them). */
export const TILES = {
  /** 64 x 64, 4 x 4 per invocation: the small-output fallback. */
  t64x64: { tm: 4, tn: 4, wy: 16, wx: 16 },
  /** 128 x 64, 8 x 4 per invocation. */
  t128x64: { tm: 8, tn: 4, wy: 16, wx: 16 },
  /** 64 x 128, 4 x 8 per invocation. */
  t64x128: { tm: 4, tn: 8, wy: 16, wx: 16 },
  /** 128 x 128, 8 x 8 per invocation. */
  t128x128: { tm: 8, tn: 8, wy: 16, wx: 16 },
  /** Thin outputs (N = a LoRA rank or a few of them): 128 rows x 32, 16 or 8 columns. */
  t128x32: { tm: 4, tn: 4, wy: 32, wx: 8 },
  t128x16: { tm: 4, tn: 4, wy: 32, wx: 4 },
  t128x8: { tm: 4, tn: 4, wy: 32, wx: 2 },
} as const satisfies Record<string, TileConfig>;

export type TileName = keyof typeof TILES;

/** The square-ish tiles for wide outputs (the projections). */
export const WIDE_TILES: TileName[] = ['t128x128', 't128x64', 't64x128', 't64x64'];

/** The name of a tile configuration (with `/f16` when it stages f16), as the tuning cache and bench write it. */
export function tileName(t: TileConfig): string {
  const name = (Object.keys(TILES) as TileName[]).find((n) => TILES[n].tm === t.tm && TILES[n].tn === t.tn && TILES[n].wy === t.wy && TILES[n].wx === t.wx);
  return `${name ?? `${t.wy}x${t.wx}/${t.tm}x${t.tn}`}${t.f16 ? '/f16' : ''}`;
}

export function tileRows(t: TileConfig): number {
  return t.wy * t.tm;
}

export function tileCols(t: TileConfig): number {
  return t.wx * t.tn;
}

/** The thin tile for an output `n` columns wide (n ≤ 32), or undefined when n needs a wide tile. */
export function thinTile(n: number): TileName | undefined {
  if (n <= 8) return 't128x8';
  if (n <= 16) return 't128x16';
  if (n <= 32) return 't128x32';
  return undefined;
}

/**
 * What a tiled product kernel needs from its caller, in WGSL:
 * - the output's rows and columns (`rows`, `cols`: WGSL u32 expressions, by default `p.M` and `p.N`), called
 *   M and N below;
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
  /** WGSL expressions for the output's rows and columns (default `p.M`, `p.N`). */
  rows?: string;
  cols?: string;
  aRun: 'k' | 'm';
  bRun: 'k' | 'n';
  /** WGSL expression for the reduction length the tile loop covers (default `p.K`). */
  depth?: string;
  /**
   * Unmasked loaders `loadA4Fast` / `loadB4Fast` (same signatures) are declared and valid for in-bounds rows
   * and k + 3 below this WGSL expression: interior tiles use them for every step that ends below it.
   */
  fastDepth?: string;
  /**
   * Split the reduction over wid.z: workgroup z covers [z · p.kChunk, (z + 1) · p.kChunk) (p.kChunk a multiple
   * of TILE_K) and a module-scope `split` holds z for `storeC`.
   */
  splitK?: boolean;
  tile: TileConfig;
}

/** WGSL of the swizzled slot of row quad `q` at depth `k` in a tile with `slots` quads per k. */
function swizzle(q: string, k: string, slots: number): string {
  return slots > 1 ? `((${q}) ^ ((((${k} >> 2u) & 3u) * 2u) & ${slots - 1}u))` : `(${q})`;
}

/**
 * WGSL that loads one operand's part of a BK-deep step into prefetch registers `<reg>0..` (`load` is the
 * loader function), and WGSL that stores those registers into the staged tile.
 */
function staging(reg: string, tile: string, load: string, run: 'k' | 'rows', rows: number, threads: number, rowStart: string) {
  const quads = (rows * TILE_K) / 4;
  const perThread = Math.ceil(quads / threads);
  const slots = rows / 4;
  const loads: string[] = [];
  const stores: string[] = [];
  for (let s = 0; s < perThread; s++) {
    const e = `(lid + ${s * threads}u)`;
    const guard = (s + 1) * threads > quads ? `if (${e} < ${quads}u) ` : '';
    if (run === 'k') {
      // A subgroup's 32 quads cover g rows x 4 quads along k: 64 contiguous bytes per row read, and the
      // transposing scalar stores of one k fall in 32 distinct banks (see the swizzle above).
      const g = Math.min(8, rows);
      const row = `(${e} % ${g}u + ${g}u * (${e} / ${g * 4}u))`;
      const kq = `((${e} / ${g}u) % 4u * 4u)`;
      loads.push(`${guard}{ ${reg}${s} = ${load}(${rowStart} + ${row}, k0n + ${kq}); }`);
      const lines = [0, 1, 2, 3].map((i) => `${tile}[(kq + ${i}u) * ${slots}u + ${swizzle('row / 4u', `(kq + ${i}u)`, slots)}][row % 4u] = v.${'xyzw'[i]};`);
      stores.push(`${guard}{
      let row = ${row};
      let kq = ${kq};
      let v = ${reg}${s};
      ${lines.join('\n      ')}
    }`);
    } else {
      // Quads of 4 consecutive rows at one k: coalesced reads, one vec4 store each.
      loads.push(`${guard}{ ${reg}${s} = ${load}(${rowStart} + (${e} % ${slots}u) * 4u, k0n + ${e} / ${slots}u); }`);
      stores.push(`${guard}{
      let kk = ${e} / ${slots}u;
      ${tile}[kk * ${slots}u + ${swizzle(`${e} % ${slots}u`, 'kk', slots)}] = ${reg}${s};
    }`);
    }
  }
  return { perThread, loads, stores };
}

/** The complete kernel source for a product described by `spec`. Dispatch `tiledProductWorkgroups`. */
export function tiledProductWgsl(spec: TiledProductSpec): string {
  const t = spec.tile;
  const threads = t.wy * t.wx;
  const bm = tileRows(t);
  const bn = tileCols(t);
  const elem = t.f16 ? 'f16' : 'f32';
  const depth = spec.depth ?? 'p.K';
  const outRows = spec.rows ?? 'p.M';
  const outCols = spec.cols ?? 'p.N';
  const aSlots = bm / 4;
  const bSlots = bn / 4;
  const tileType = (n: number) => (t.f16 ? `array<vec4<f16>, ${n}>` : `array<vec4<f32>, ${n}>`);
  const stage = (fast: boolean) => ({
    a: staging('ra', 'aTile', fast ? 'loadA4Fast' : 'loadA4', spec.aRun === 'k' ? 'k' : 'rows', bm, threads, 'm0'),
    b: staging('rb', 'bTile', fast ? 'loadB4Fast' : 'loadB4', spec.bRun === 'k' ? 'k' : 'rows', bn, threads, 'n0'),
  });
  const masked = stage(false);
  const fast = stage(true);
  // Each operand takes its unmasked loads when its own rows are inside (a thin output never is along N, but its
  // A rows are) and the step ends below the unmasked depth.
  const pick = (inside: string, fastLoads: string[], maskedLoads: string[]) => spec.fastDepth
    ? `if (${inside} && k0n + ${TILE_K}u <= ${spec.fastDepth}) {
      ${fastLoads.join('\n      ')}
    } else {
      ${maskedLoads.join('\n      ')}
    }`
    : maskedLoads.join('\n    ');
  const loadStep = `${pick('innerM', fast.a.loads, masked.a.loads)}
    ${pick('innerN', fast.b.loads, masked.b.loads)}`;
  const regs = [
    ...Array.from({ length: masked.a.perThread }, (_, s) => `var ra${s} = vec4<f32>();`),
    ...Array.from({ length: masked.b.perThread }, (_, s) => `var rb${s} = vec4<f32>();`),
  ];
  const stores = [...masked.a.stores, ...masked.b.stores].map((s) => s.replace(/ = v\.([xyzw]);/g, ` = ${elem}(v.$1);`).replace(/\] = (r[ab]\d+);/g, `] = vec4<${elem}>($1);`));
  // The multiply: tm / 4 quads of A and tn / 4 of B per k, acc[i · tn/4 + j] holds row i, columns 4j..4j+3.
  const aq = t.tm / 4;
  const bq = t.tn / 4;
  const mult: string[] = [];
  for (let i = 0; i < aq; i++) mult.push(`let a${i} = vec4<f32>(aTile[k * ${aSlots}u + ${swizzle(`ty * ${aq}u + ${i}u`, 'k', aSlots)}]);`);
  for (let j = 0; j < bq; j++) mult.push(`let b${j} = vec4<f32>(bTile[k * ${bSlots}u + ${swizzle(`tx * ${bq}u + ${j}u`, 'k', bSlots)}]);`);
  for (let i = 0; i < t.tm; i++) {
    for (let j = 0; j < bq; j++) mult.push(`acc[${i * bq + j}] += a${i >> 2}.${'xyzw'[i & 3]} * b${j};`);
  }
  // Interior tiles pass every bounds test at its first operand (`inner`, uniform across the workgroup).
  const storeLines: string[] = [];
  for (let i = 0; i < t.tm; i++) {
    const cols: string[] = [];
    for (let j = 0; j < t.tn; j++) cols.push(`if (inner || n + ${j}u < ${outCols}) { storeC(m + ${i}u, n + ${j}u, acc[${i * bq + (j >> 2)}].${'xyzw'[j & 3]}); }`);
    storeLines.push(`if (inner || m + ${i}u < ${outRows}) {\n    ${cols.join('\n    ')}\n  }`);
  }
  const kRange = spec.splitK
    ? `split = wid.z;
  let kBegin = wid.z * p.kChunk;
  let kEnd = min(${depth}, kBegin + p.kChunk);`
    : `let kBegin = 0u;
  let kEnd = ${depth};`;
  return /* wgsl */ `${t.f16 ? 'enable f16;\n' : ''}
${spec.declarations}
${spec.splitK ? 'var<private> split: u32;' : ''}
// Operand tiles as [k][row / 4] (swizzled): a vec4 read gives one k step for four consecutive rows (or columns).
var<workgroup> aTile: ${tileType(TILE_K * aSlots)};
var<workgroup> bTile: ${tileType(TILE_K * bSlots)};

${entryWgsl(threads)} {
  let tilesN = (${outCols} + ${bn - 1}u) / ${bn}u;
  let tile = wid.x + wid.y * nwg.x;
  let m0 = (tile / tilesN) * ${bm}u;
  let n0 = (tile % tilesN) * ${bn}u;
  if (m0 >= ${outRows}) { return; }
  let tx = lid % ${t.wx}u;
  let ty = lid / ${t.wx}u;
  // Operand rows in bounds (unmasked loads below the unmasked depth); the whole tile (unmasked stores).
  let innerM = m0 + ${bm}u <= ${outRows};
  let innerN = n0 + ${bn}u <= ${outCols};
  let inner = innerM && innerN;
  ${kRange}
  // acc[i * ${bq} + j] is output (m0 + ${t.tm} ty + i, n0 + ${t.tn} tx + 4 j .. 4 j + 3).
  var acc: array<vec4<f32>, ${t.tm * bq}>;
  ${regs.join('\n  ')}
  // Each pass stages the registers loaded by the previous one, starts loading the next step into registers
  // (prefetch: the global reads overlap the multiply), then multiplies the staged step. One copy of the load
  // code serves the first step and the prefetches (the pass count is one more than the steps).
  for (var k0n = kBegin; k0n < kEnd + ${TILE_K}u; k0n += ${TILE_K}u) {
    if (k0n > kBegin) {
      ${stores.join('\n      ')}
      workgroupBarrier();
    }
    if (k0n < kEnd) {
      ${loadStep}
    }
    if (k0n > kBegin) {
      for (var k = 0u; k < ${TILE_K}u; k++) {
        ${mult.join('\n        ')}
      }
      workgroupBarrier();
    }
  }
  let m = m0 + ty * ${t.tm}u;
  let n = n0 + tx * ${t.tn}u;
  ${storeLines.join('\n  ')}
}`;
}

/** Workgroups (to pass through `grid`) that cover an M x N output with `tile`. */
export function tiledProductWorkgroups(tile: TileConfig, M: number, N: number): number {
  return Math.ceil(M / tileRows(tile)) * Math.ceil(N / tileCols(tile));
}

/**
 * Where a second product appended to a reduction of length `k` starts: the next multiple of the staged depth,
 * so that no staged tile mixes the two (C = A·Bᵀ + A2·B2ᵀ as one product over [A | A2] and [B | B2]).
 */
export function appendedReductionStart(k: number): number {
  return Math.ceil(k / TILE_K) * TILE_K;
}

/**
 * The loaders of a product whose reduction runs over main operands up to `p.loraK0`, then over appended ones
 * (a LoRA term: C = A·Bᵀ + A2·B2ᵀ as one product, from appendedReductionStart): `loadA4` / `loadB4` pick by k,
 * and the unmasked `loadA4Fast` / `loadB4Fast` read the main operands alone (valid below the main depth, the
 * caller's fastDepth). `main.a(suffix)` / `main.b(suffix)` give the WGSL call of the main loader ('' or 'Fast')
 * in (m, k) and (n, k); `appended` the WGSL of the appended operands there, in k - p.loraK0.
 */
export function appendedReductionLoaders(main: { a: (suffix: string) => string; b: (suffix: string) => string }, appended?: { a: string; b: string }): string {
  const loader = (name: string, row: string, mainLoad: string, appendedLoad?: string) => appendedLoad
    ? `fn ${name}(${row}: u32, k: u32) -> vec4<f32> {
  if (k < p.loraK0) { return ${mainLoad}; }
  return ${appendedLoad};
}`
    : `fn ${name}(${row}: u32, k: u32) -> vec4<f32> { return ${mainLoad}; }`;
  return [
    loader('loadA4', 'm', main.a(''), appended?.a),
    loader('loadB4', 'n', main.b(''), appended?.b),
    loader('loadA4Fast', 'm', main.a('Fast')),
    loader('loadB4Fast', 'n', main.b('Fast')),
  ].join('\n');
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
 * zero outside rows x cols, and `fn <name>Fast` reading them without bounds checks (for callers that know the
 * quad is inside). bf16 and f16 operands (u32 pairs) need an even `cols`, `stride` and `base` and a `col` that
 * is a multiple of 2, so that each pair of values is one word read and unpacked in registers. With `vector` (only
 * where `quadAligned(base, stride)` holds, and for `col` multiples of 4), the quad is one load, masked past
 * `cols`; the array is then declared as `wgslQuadArray(dtype, true)`. Block formats (whole blocks per row, `col`
 * a multiple of 4) dequantize the quad in registers whatever `vector` says.
 */
export function wgslRowQuad(name: string, array: string, dtype: MatrixDType, l: RowQuadLayout, vector = false): string {
  if (isBlockDType(dtype)) {
    return `${wgslBlockWeightQuad(dtype, `${name}Block`, array)}
fn ${name}Fast(row: u32, col: u32) -> vec4<f32> { return ${name}Block(${l.base} + row * ${l.stride} + col); }
fn ${name}(row: u32, col: u32) -> vec4<f32> {
  if (row >= ${l.rows} || col >= ${l.cols}) { return vec4<f32>(); }
  return ${name}Fast(row, col);
}`;
  }
  // A u32 of two 16-bit values -> vec2<f32> (element 2i in the low half).
  const pair = (w: string) => (dtype === 'f16' ? `unpack2x16float(${w})` : `bitcast<vec2<f32>>(vec2<u32>(${w} << 16u, ${w} & 0xffff0000u))`);
  if (vector) {
    const at = `(${l.base} + row * ${l.stride} + col) >> 2u`;
    const load = dtype === 'f32'
      ? `return ${array}[${at}];`
      : `let w = ${array}[${at}];
  return vec4<f32>(${pair('w.x')}, ${pair('w.y')});`;
    return `fn ${name}Fast(row: u32, col: u32) -> vec4<f32> {
  ${load}
}
fn ${name}(row: u32, col: u32) -> vec4<f32> {
  if (row >= ${l.rows} || col >= ${l.cols}) { return vec4<f32>(); }
  return select(vec4<f32>(), ${name}Fast(row, col), vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(${l.cols}));
}`;
  }
  if (dtype === 'f32') {
    return `fn ${name}Fast(row: u32, col: u32) -> vec4<f32> {
  let at = ${l.base} + row * ${l.stride} + col;
  return vec4<f32>(${array}[at], ${array}[at + 1u], ${array}[at + 2u], ${array}[at + 3u]);
}
fn ${name}(row: u32, col: u32) -> vec4<f32> {
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
  return `fn ${name}Fast(row: u32, col: u32) -> vec4<f32> {
  let word = (${l.base} + row * ${l.stride} + col) >> 1u;
  return vec4<f32>(${pair(`${array}[word]`)}, ${pair(`${array}[word + 1u]`)});
}
fn ${name}(row: u32, col: u32) -> vec4<f32> {
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
