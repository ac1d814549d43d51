// Backward of causal GQA attention for training (Tq = Tk = T, qStart = 0), FlashAttention-2 style with five
// T²·d products: the probabilities are recomputed block by block from q, k and the forward's log-sum-exp,
//   P = exp(scale q·k - lse), dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - D), dK = scale dSᵀ Q, dQ = scale dS K,
// with D = rowsum(dO ∘ out). WGSL has no float atomics, so every output element has one owner: the key pass owns
// dK and dV (a workgroup holds a key block of one kv head and walks the query rows of all its query heads) and
// writes dS to a scratch buffer; the query pass reads dS back and owns dQ. Storing dS (T² floats per query
// head, over kv-head chunks when that exceeds a binding) costs memory traffic instead of the two products a
// query pass would need to recompute it. A first pass packs lse, D and the segment per (query, head), and the
// key segments, into one buffer, which keeps the key pass within 8 storage bindings.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';
import { programScratch } from './scratch.js';
import {
  allOf, attends, BLOCK, checkHeads, headQuads, headQuadWgsl, LOOP_BOUND_FIELDS, loopBoundsFor, paddedQuads, storeHeadQuadWgsl, unroll,
  type AttentionVariant, type LoopBounds,
} from './attention.js';

export interface AttentionBackwardArgs extends AttentionBackwardShape {
  q: Binding;
  k: Binding;
  v: Binding;
  out: Binding;
  dOut: Binding;
  lse: Binding;
  segQ: Binding;
  segK: Binding;
  dq: Binding;
  dk: Binding;
  dv: Binding;
  variant?: AttentionBackwardVariant;
}

export interface AttentionBackwardVariant extends AttentionVariant {
  /** Largest dS scratch in bytes (default 128 MiB, and never above a binding); smaller makes more kv-head chunks. */
  scratchBytes?: number;
}

export interface AttentionBackwardShape {
  B: number;
  T: number;
  nHeads: number;
  nKv: number;
  headDim: number;
}

const STATS_THREADS = 64;

const statsLayout = kernelLayout({
  out: storage(),
  dOut: storage(),
  lse: storage(),
  segQ: storage('array<u32>'),
  segK: storage('array<u32>'),
  stats: output('array<u32>'),
  p: uniform({ rows: 'u32', tokens: 'u32', nHeads: 'u32', headDim: 'u32' }),
});

/**
 * Packs, per row = token * nHeads + head: stats[3 row] = lse, stats[3 row + 1] = D = out · dOut (f32 bits),
 * stats[3 row + 2] = the token's segment; then stats[3 rows + token] = the key segment of each token.
 */
export const attentionStatsWgsl = /* wgsl */ `
${statsLayout.wgsl}

${entryWgsl(STATS_THREADS)} {
  let row = (wid.x + wid.y * nwg.x) * ${STATS_THREADS}u + lid;
  if (row < p.tokens) { stats[3u * p.rows + row] = segK[row]; }
  if (row >= p.rows) { return; }
  var delta = 0.0;
  for (var d = 0u; d < p.headDim; d++) { delta += out[row * p.headDim + d] * dOut[row * p.headDim + d]; }
  stats[3u * row] = bitcast<u32>(lse[row]);
  stats[3u * row + 1u] = bitcast<u32>(delta);
  stats[3u * row + 2u] = segQ[row / p.nHeads];
}`;

/**
 * Tiling shared by the two passes (the dS blocks one writes, the other reads): query tiles of `rows` rows
 * (positions x heads of a kv group, position-major, as in the forward) and key blocks of 4 * keyLanes keys.
 * The key pass runs keyLanes x rowLanes invocations, rows = 4 * rowLanes.
 */
export interface BackwardTiles {
  keyLanes: number;
  rowLanes: number;
}

function keyPassBytes(t: BackwardTiles, headDim: number): number {
  const row = paddedQuads(headQuads(headDim)) * 16;
  const keys = BLOCK * t.keyLanes;
  const rows = BLOCK * t.rowLanes;
  return 2 * keys * row + 2 * rows * row + 2 * keys * paddedQuads(t.rowLanes) * 16 + 3 * rows * 4;
}

const BACKWARD_CHOICES: BackwardTiles[] = [[8, 8], [8, 4], [4, 8], [4, 4], [2, 4], [4, 2], [2, 2], [1, 2], [1, 1]]
  .map(([keyLanes, rowLanes]) => ({ keyLanes: keyLanes!, rowLanes: rowLanes! }));

/** The largest backward tiling whose key pass fits `bytes` of workgroup memory and whose rows hold a kv group. */
export function backwardTiles(headDim: number, group: number, bytes: number): BackwardTiles {
  const t = BACKWARD_CHOICES.find((c) => BLOCK * c.rowLanes >= group && keyPassBytes(c, headDim) <= bytes);
  if (!t) throw new Error(`attention backward: head_dim ${headDim} with ${group} heads per kv head needs more than ${bytes} bytes of workgroup memory`);
  return t;
}

/** Invocations per row in the query pass (over head-dim quads). */
const Q_PASS_LANES = 8;

/**
 * The dS scratch holds, per unit u = bh * qTiles + qt (bh = batch row * nKv + kv head, qt a query tile), the
 * kBlocks blocks of R x BK scores of that query tile; a chunk covers units [u0, u1).
 */
const passFields = { B: 'u32', T: 'u32', nHeads: 'u32', nKv: 'u32', u0: 'u32', u1: 'u32', qTiles: 'u32', kBlocks: 'u32', scale: 'f32' } as const;

const keyPassLayout = kernelLayout({
  q: storage(),
  k: storage(),
  v: storage(),
  dOut: storage(),
  stats: storage('array<u32>'),
  dk: output(),
  dv: output(),
  dsOut: output(),
  p: uniform({ ...passFields, ...LOOP_BOUND_FIELDS }),
});

/** WGSL constants both passes share. */
function sharedConstants(headDim: number, group: number, t: BackwardTiles): string {
  const D4 = headQuads(headDim);
  const rows = BLOCK * t.rowLanes;
  return `const D = ${headDim}u;
const D4 = ${D4}u;
const RS = ${paddedQuads(D4)}u;  // row stride of the head-dim tiles, in vec4
const G = ${group}u;             // query heads per kv head
const R = ${rows}u;              // rows of a query tile: (position, head of the group), position-major
const BQT = ${Math.floor(rows / group)}u;  // positions per query tile
const KG = ${t.keyLanes}u;
const BK = ${BLOCK * t.keyLanes}u;  // keys per key block`;
}

/**
 * The key pass. A workgroup owns key block kb of one (batch row, kv head) = bh and walks the chunk's query tiles
 * of bh; when the chunk starts inside bh's tiles, an earlier chunk wrote dK and dV and this one adds to them.
 * Invocation (kg, l) owns keys kg + KG i and rows l + L j (i, j < 4) of each score block, and the same keys by
 * head-dim quads l + L e of dK, dV.
 */
export function attentionKeyPassWgsl(headDim: number, group: number, t: BackwardTiles, bounds: LoopBounds): string {
  const L = t.rowLanes;
  const KG = t.keyLanes;
  const OUT4 = Math.ceil(headQuads(headDim) / L);
  const SR = paddedQuads(L);
  const bound = (c: string, u: string) => (bounds === 'const' ? c : `p.${u}`);
  return /* wgsl */ `
${keyPassLayout.wgsl}

${sharedConstants(headDim, group, t)}
const L = ${L}u;
const SR = ${SR}u;      // row stride of the P and dS tiles, in vec4
const OUT4 = ${OUT4}u;  // dK, dV quads per invocation and key
const RQ = ${L}u;       // row quads per query tile
const WG = ${KG * L}u;

var<workgroup> kTile: array<vec4<f32>, ${BLOCK * KG * paddedQuads(headQuads(headDim))}>;
var<workgroup> vTile: array<vec4<f32>, ${BLOCK * KG * paddedQuads(headQuads(headDim))}>;
var<workgroup> qTile: array<vec4<f32>, ${BLOCK * L * paddedQuads(headQuads(headDim))}>;
var<workgroup> gTile: array<vec4<f32>, ${BLOCK * L * paddedQuads(headQuads(headDim))}>;  // dOut rows
var<workgroup> pTile: array<vec4<f32>, ${BLOCK * KG * SR}>;   // P, [key][row / 4]
var<workgroup> dsTile: array<vec4<f32>, ${BLOCK * KG * SR}>;  // dS, [key][row / 4]
var<workgroup> rowLse: array<f32, ${BLOCK * L}>;
var<workgroup> rowDelta: array<f32, ${BLOCK * L}>;
var<workgroup> rowSeg: array<u32, ${BLOCK * L}>;

${headQuadWgsl('qQuad', 'q')}
${headQuadWgsl('kQuad', 'k')}
${headQuadWgsl('vQuad', 'v')}
${headQuadWgsl('gQuad', 'dOut')}

${entryWgsl(KG * L)} {
  let block = wid.x + wid.y * nwg.x;
  let kb = block % p.kBlocks;
  let bh = p.u0 / p.qTiles + block / p.kBlocks;
  if (kb >= p.kBlocks || bh * p.qTiles >= p.u1) { return; }
  let qtEnd = min(p.u1 - bh * p.qTiles, p.qTiles);
  let accumulate = p.u0 > bh * p.qTiles;
  let b = bh / p.nKv;
  let kvHead = bh % p.nKv;
  let j0 = kb * BK;
  let qStride = p.nHeads * D;
  let kvStride = p.nKv * D;
  let statRows = p.B * p.T * p.nHeads;

  for (var i = lid; i < BK * D4; i += WG) {
    let c = i / D4;
    let j = j0 + c;
    var kx = vec4<f32>();
    var vx = vec4<f32>();
    if (j < p.T) {
      let at = (b * p.T + j) * kvStride + kvHead * D;
      kx = kQuad(at, i % D4);
      vx = vQuad(at, i % D4);
    }
    kTile[c * RS + i % D4] = kx;
    vTile[c * RS + i % D4] = vx;
  }

  let kg = lid / L;
  let l = lid % L;
${unroll(4, (i) => `  let c${i} = kg + ${KG * i}u;
  let key${i} = j0 + c${i};
  let kseg${i} = stats[3u * statRows + b * p.T + min(key${i}, p.T - 1u)];`)}
${unroll(4, (j) => `  let r${j} = l + ${L * j}u;`)}
  // dk<i>_<e>, dv<i>_<e>: key i, head-dim quad l + L e (written out per e, as the forward's output).
${unroll(4, (i) => `  ${unroll(OUT4, (e) => `var dk${i}_${e} = vec4<f32>();`, ' ')}
  ${unroll(OUT4, (e) => `var dv${i}_${e} = vec4<f32>();`, ' ')}`)}

  // Query tiles before the one holding position j0 see none of the block.
  for (var qt = max(j0 / BQT, select(0u, p.u0 - bh * p.qTiles, accumulate)); qt < qtEnd; qt++) {
    let t0 = qt * BQT;
    workgroupBarrier();
    for (var i = lid; i < R * D4; i += WG) {
      let r = i / D4;
      let pos = t0 + r / G;
      var qx = vec4<f32>();
      var gx = vec4<f32>();
      if (r < BQT * G && pos < p.T) {
        let at = (b * p.T + pos) * qStride + (kvHead * G + r % G) * D;
        qx = qQuad(at, i % D4);
        gx = gQuad(at, i % D4);
      }
      qTile[r * RS + i % D4] = qx;
      gTile[r * RS + i % D4] = gx;
    }
    for (var r = lid; r < R; r += WG) {
      let pos = min(t0 + r / G, p.T - 1u);
      let st = 3u * ((b * p.T + pos) * p.nHeads + kvHead * G + r % G);
      rowLse[r] = bitcast<f32>(stats[st]);
      rowDelta[r] = bitcast<f32>(stats[st + 1u]);
      rowSeg[r] = stats[st + 2u];
    }
    workgroupBarrier();

    // Scores and dP for keys i by rows j of this invocation: s_i[j] = k_i · q_j, dp_i[j] = v_i · dOut_j.
${unroll(4, (i) => `    var s${i} = vec4<f32>();
    var dp${i} = vec4<f32>();`)}
    for (var d4 = 0u; d4 < ${bound('D4', 'd4')}; d4++) {
${unroll(4, (j) => `      let q${j} = qTile[r${j} * RS + d4];
      let g${j} = gTile[r${j} * RS + d4];`)}
${unroll(4, (i) => `      let k${i} = kTile[c${i} * RS + d4];
      let v${i} = vTile[c${i} * RS + d4];
      s${i} += vec4<f32>(dot(k${i}, q0), dot(k${i}, q1), dot(k${i}, q2), dot(k${i}, q3));
      dp${i} += vec4<f32>(dot(v${i}, g0), dot(v${i}, g1), dot(v${i}, g2), dot(v${i}, g3));`)}
    }
    let dsBase = ((bh * p.qTiles + qt - p.u0) * p.kBlocks + kb) * R * BK;
${[0, 1, 2, 3].map((i) => unroll(4, (j) => `    {
      let pos = t0 + r${j} / G;
      let seen = ${allOf(`r${j} < BQT * G`, 'pos < p.T', `key${i} <= pos`, `rowSeg[r${j}] == kseg${i}`)};
      let pr = select(0.0, exp(s${i}[${j}] * p.scale - rowLse[r${j}]), seen);
      let ds = pr * (dp${i}[${j}] - rowDelta[r${j}]);
      pTile[c${i} * SR + r${j} / 4u][r${j} % 4u] = pr;
      dsTile[c${i} * SR + r${j} / 4u][r${j} % 4u] = ds;
      dsOut[dsBase + r${j} * BK + c${i}] = ds;
    }`)).join('\n')}
    workgroupBarrier();

    // dV += P dOut, dK += dS Q over the rows of the tile, four at a time.
    for (var r4 = 0u; r4 < ${bound('RQ', 'rowQuads')}; r4++) {
${unroll(4, (i) => `      let p${i} = pTile[c${i} * SR + r4];
      let ds${i} = dsTile[c${i} * SR + r4];`)}
${unroll(OUT4, (e) => `      {
        let d4 = min(l + ${L * e}u, D4 - 1u);  // quads past D4 are computed and dropped
${unroll(4, (r) => `        let g${r} = gTile[(r4 * 4u + ${r}u) * RS + d4];
        let q${r} = qTile[(r4 * 4u + ${r}u) * RS + d4];`)}
${unroll(4, (i) => `        dv${i}_${e} += p${i}.x * g0 + p${i}.y * g1 + p${i}.z * g2 + p${i}.w * g3;
        dk${i}_${e} += ds${i}.x * q0 + ds${i}.y * q1 + ds${i}.z * q2 + ds${i}.w * q3;`)}
      }`)}
    }
  }

${unroll(4, (i) => `  if (key${i} < p.T) {
    let at = (b * p.T + key${i}) * kvStride + kvHead * D;
    // After a chunk that began this key block's sums, add to what it wrote.
${unroll(OUT4, (e) => `    if (l + ${L * e}u < D4) {
      let d4 = l + ${L * e}u;
      ${storeHeadQuadWgsl('dk', 'at', 'd4', `(dk${i}_${e} * p.scale)`, 'accumulate')}
      ${storeHeadQuadWgsl('dv', 'at', 'd4', `dv${i}_${e}`, 'accumulate')}
    }`)}
  }`)}
}`;
}

const queryPassLayout = kernelLayout({
  k: storage(),
  ds: storage('array<vec4<f32>>'),
  dq: output(),
  p: uniform({ ...passFields, ...LOOP_BOUND_FIELDS }),
});

/**
 * The query pass: dQ = scale dS K. A workgroup owns one unit (query tile qt of one bh) and walks the key blocks the key pass
 * visited for it; invocation (rg, l) owns rows rg + RG i (i < 4) by head-dim quads l + L e.
 */
export function attentionQueryPassWgsl(headDim: number, group: number, t: BackwardTiles, bounds: LoopBounds): string {
  const L = Q_PASS_LANES;
  const RG = t.rowLanes;  // rows = 4 * rowLanes, so 4 rows each for rowLanes groups
  const OUT4 = Math.ceil(headQuads(headDim) / L);
  const SK = paddedQuads(t.keyLanes);
  const bound = (c: string, u: string) => (bounds === 'const' ? c : `p.${u}`);
  return /* wgsl */ `
${queryPassLayout.wgsl}

${sharedConstants(headDim, group, t)}
const L = ${L}u;
const RG = ${RG}u;
const SK = ${SK}u;      // row stride of the dS tile, in vec4
const OUT4 = ${OUT4}u;  // dQ quads per invocation and row
const WG = ${RG * L}u;

var<workgroup> kTile: array<vec4<f32>, ${BLOCK * t.keyLanes * paddedQuads(headQuads(headDim))}>;
var<workgroup> dsTile: array<vec4<f32>, ${BLOCK * t.rowLanes * SK}>;  // [row][key / 4]

${headQuadWgsl('kQuad', 'k')}

${entryWgsl(RG * L)} {
  let block = wid.x + wid.y * nwg.x;
  let u = p.u0 + block;
  if (u >= p.u1) { return; }
  let qt = u % p.qTiles;
  let bh = u / p.qTiles;
  let b = bh / p.nKv;
  let kvHead = bh % p.nKv;
  let t0 = qt * BQT;
  let kvStride = p.nKv * D;

  let rg = lid / L;
  let l = lid % L;
${unroll(4, (i) => `  let r${i} = rg + ${RG * i}u;`)}
  // acc<i>_<e>: row i, head-dim quad l + L e.
${unroll(4, (i) => `  ${unroll(OUT4, (e) => `var acc${i}_${e} = vec4<f32>();`, ' ')}`)}

  // The key blocks the key pass visited for this tile: those starting before its last position.
  let kEnd = min(t0 + BQT, p.T);
  for (var kb = 0u; kb * BK < kEnd; kb++) {
    let j0 = kb * BK;
    workgroupBarrier();
    for (var i = lid; i < BK * D4; i += WG) {
      let c = i / D4;
      let j = j0 + c;
      var x = vec4<f32>();
      if (j < p.T) { x = kQuad((b * p.T + j) * kvStride + kvHead * D, i % D4); }
      kTile[c * RS + i % D4] = x;
    }
    let dsBase = ((u - p.u0) * p.kBlocks + kb) * R * KG;
    for (var i = lid; i < R * KG; i += WG) { dsTile[(i / KG) * SK + i % KG] = ds[dsBase + i]; }
    workgroupBarrier();
    for (var c4 = 0u; c4 < ${bound('KG', 'keyQuads')}; c4++) {
${unroll(4, (i) => `      let s${i} = dsTile[r${i} * SK + c4];`)}
${unroll(OUT4, (e) => `      {
        let d4 = min(l + ${L * e}u, D4 - 1u);
${unroll(4, (c) => `        let k${c} = kTile[(c4 * 4u + ${c}u) * RS + d4];`)}
${unroll(4, (i) => `        acc${i}_${e} += s${i}.x * k0 + s${i}.y * k1 + s${i}.z * k2 + s${i}.w * k3;`)}
      }`)}
    }
  }

${unroll(4, (i) => `  {
    let pos = t0 + r${i} / G;
    if (r${i} < BQT * G && pos < p.T) {
      let at = ((b * p.T + pos) * p.nHeads + kvHead * G + r${i} % G) * D;
${unroll(OUT4, (e) => `      if (l + ${L * e}u < D4) ${storeHeadQuadWgsl('dq', 'at', `(l + ${L * e}u)`, `(acc${i}_${e} * p.scale)`)}`)}
    }
  }`)}
}`;
}

/** Default cap of the dS scratch: beyond it the passes run over chunks of its units. */
const SCRATCH_BYTES = 128 * 1024 * 1024;

/** Bytes of the dS of one query tile over all key blocks: the scratch's unit. */
export function dsUnitBytes(T: number, group: number, t: BackwardTiles): number {
  return Math.ceil(T / (BLOCK * t.keyLanes)) * BLOCK * t.rowLanes * BLOCK * t.keyLanes * 4;
}

/** The passes' geometry: rows and positions per query tile, keys per key block, and how many of each. */
interface BackwardGrid {
  rows: number;
  positions: number;
  keys: number;
  qTiles: number;
  kBlocks: number;
}

function backwardGrid(T: number, group: number, t: BackwardTiles): BackwardGrid {
  const rows = BLOCK * t.rowLanes;
  const positions = Math.floor(rows / group);
  const keys = BLOCK * t.keyLanes;
  return { rows, positions, keys, qTiles: Math.ceil(T / positions), kBlocks: Math.ceil(T / keys) };
}

/** Appends the stats pass, then the key and query passes per chunk of the dS scratch's units. */
export function recordAttentionBackward(prog: Program, a: AttentionBackwardArgs, label = 'attention-backward'): void {
  checkHeads(a.nHeads, a.nKv, a.headDim);
  const gpu = prog.gpu;
  const group = a.nHeads / a.nKv;
  const rows = a.B * a.T * a.nHeads;
  const tokens = a.B * a.T;
  const stats = programScratch(prog, 'attention backward stats', (3 * rows + tokens) * 4);
  statsLayout.dispatch(prog, `${label} stats`, attentionStatsWgsl, {
    out: a.out, dOut: a.dOut, lse: a.lse, segQ: a.segQ, segK: a.segK, stats, p: { rows, tokens, nHeads: a.nHeads, headDim: a.headDim },
  }, Math.ceil(rows / STATS_THREADS), { flops: 2 * rows * a.headDim, bytes: 2 * rows * 4 * a.headDim });

  const t = backwardTiles(a.headDim, group, a.variant?.workgroupBytes ?? gpu.workgroupBytes);
  const bounds = loopBoundsFor(gpu, a.variant);
  const grid = backwardGrid(a.T, group, t);
  const { qTiles, kBlocks } = grid;
  const units = a.B * a.nKv * qTiles;
  const unitBytes = dsUnitBytes(a.T, group, t);
  // The scratch is an intermediate like the activations, which take the device's binding limit as it is.
  const limit = Math.min(gpu.device.limits.maxStorageBufferBindingSize, a.variant?.scratchBytes ?? SCRATCH_BYTES);
  const perChunk = Math.max(1, Math.min(units, Math.floor(limit / unitBytes)));
  const ds = programScratch(prog, 'attention backward dS', perChunk * unitBytes);
  const D4 = headQuads(a.headDim);
  const keyCode = attentionKeyPassWgsl(a.headDim, group, t, bounds);
  const queryCode = attentionQueryPassWgsl(a.headDim, group, t, bounds);
  const loops = { d4: D4, keyQuads: t.keyLanes, rowQuads: t.rowLanes };
  const cost = backwardCost(a, grid);
  for (let u0 = 0; u0 < units; u0 += perChunk) {
    const u1 = Math.min(units, u0 + perChunk);
    const common = { B: a.B, T: a.T, nHeads: a.nHeads, nKv: a.nKv, u0, u1, qTiles, kBlocks, scale: 1 / Math.sqrt(a.headDim) };
    const chunk = units > perChunk ? ` ${u0 / perChunk}` : '';
    const pairs = Math.floor((u1 - 1) / qTiles) - Math.floor(u0 / qTiles) + 1;
    const share = (u1 - u0) / units;
    keyPassLayout.dispatch(prog, `${label} dk dv${chunk}`, keyCode, {
      q: a.q, k: a.k, v: a.v, dOut: a.dOut, stats, dk: a.dk, dv: a.dv, dsOut: ds, p: { ...common, ...loops },
    }, pairs * kBlocks, { flops: cost.keyPass.flops * share, bytes: cost.keyPass.bytes * share });
    queryPassLayout.dispatch(prog, `${label} dq${chunk}`, queryCode, {
      k: a.k, ds, dq: a.dq, p: { ...common, ...loops },
    }, u1 - u0, { flops: cost.queryPass.flops * share, bytes: cost.queryPass.bytes * share });
  }
}

/**
 * What the two passes execute, masked pairs included, per (batch row, kv head): the key pass multiplies each key
 * block with the query tiles from its own on (S, dP, dV, dK: 8·D FLOP per row and key) reading their Q, dO and
 * statistics and writing dS; the query pass multiplies each query tile with the key blocks before its end (dQ:
 * 2·D) reading K and dS.
 */
function backwardCost(a: AttentionBackwardArgs, { rows: R, positions: BQT, keys: BK, qTiles, kBlocks }: BackwardGrid) {
  let keyPassTiles = 0;
  for (let kb = 0; kb < kBlocks; kb++) keyPassTiles += qTiles - Math.floor((kb * BK) / BQT);
  let queryPassBlocks = 0;
  for (let qt = 0; qt < qTiles; qt++) queryPassBlocks += Math.ceil(Math.min((qt + 1) * BQT, a.T) / BK);
  const groups = a.B * a.nKv;
  const rowBytes = 4 * a.headDim;
  const pairFlops = R * BK * a.headDim;
  return {
    keyPass: {
      flops: groups * keyPassTiles * pairFlops * 8,
      bytes: groups * (keyPassTiles * (2 * R * rowBytes + 4 * R * 3 + R * BK * 4) + kBlocks * BK * 4 * rowBytes),
    },
    queryPass: {
      flops: groups * queryPassBlocks * pairFlops * 2,
      bytes: groups * (queryPassBlocks * (BK * rowBytes + R * BK * 4) + qTiles * R * rowBytes),
    },
  };
}

/** Plain-TS reference in double precision, recomputing the probabilities from scratch. */
export function attentionBackwardRef(
  q: Float32Array, k: Float32Array, v: Float32Array, dOut: Float32Array, segQ: Uint32Array, segK: Uint32Array,
  s: AttentionBackwardShape,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const { B, T, nHeads, nKv, headDim: D } = s;
  const shape = { B, Tq: T, Tk: T, qStart: 0, nHeads, nKv, headDim: D };
  const scale = 1 / Math.sqrt(D);
  const group = nHeads / nKv;
  const dq = new Float64Array(B * T * nHeads * D);
  const dk = new Float64Array(B * T * nKv * D);
  const dv = new Float64Array(B * T * nKv * D);
  const probs = new Float64Array(T);
  const dProbs = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHeads; h++) {
      const kvOff = Math.floor(h / group) * D;
      for (let t = 0; t < T; t++) {
        const qOff = (b * T + t) * nHeads * D + h * D;
        let max = -Infinity;
        for (let j = 0; j < T; j++) {
          probs[j] = -Infinity;
          if (!attends(shape, segQ, segK, b, t, j)) continue;
          const kOff = (b * T + j) * nKv * D + kvOff;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d]! * k[kOff + d]!;
          probs[j] = dot * scale;
          max = Math.max(max, probs[j]!);
        }
        if (max === -Infinity) continue;
        let sum = 0;
        for (let j = 0; j < T; j++) {
          probs[j] = probs[j] === -Infinity ? 0 : Math.exp(probs[j]! - max);
          sum += probs[j]!;
        }
        // dP = dO . v_j per key; delta = sum_j P_j dP_j (equals rowsum(dO * out)).
        let delta = 0;
        for (let j = 0; j < T; j++) {
          probs[j] = probs[j]! / sum;
          const vOff = (b * T + j) * nKv * D + kvOff;
          let dp = 0;
          for (let d = 0; d < D; d++) dp += dOut[qOff + d]! * v[vOff + d]!;
          dProbs[j] = dp;
          delta += probs[j]! * dp;
        }
        for (let j = 0; j < T; j++) {
          if (probs[j] === 0) continue;
          const kvAt = (b * T + j) * nKv * D + kvOff;
          const ds = probs[j]! * (dProbs[j]! - delta) * scale;
          for (let d = 0; d < D; d++) {
            dv[kvAt + d] += probs[j]! * dOut[qOff + d]!;
            dq[qOff + d] += ds * k[kvAt + d]!;
            dk[kvAt + d] += ds * q[qOff + d]!;
          }
        }
      }
    }
  }
  return { dq: Float32Array.from(dq), dk: Float32Array.from(dk), dv: Float32Array.from(dv) };
}
