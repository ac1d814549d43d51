// Causal grouped-query attention, forward, flash-style: a workgroup owns a block of queries of one (batch row,
// head), streams key/value blocks through workgroup memory and keeps a running max and sum per query (online
// softmax), so no T x T score matrix ever reaches global memory. Saves the log-sum-exp per query and head for
// the backward, which recomputes the probabilities from it.
import type { Gpu } from '../gpu/device.js';
import { entryWgsl, kernelLayout, output, storage, uniform, uniformBuffer, writeUniform } from '../gpu/kernel.js';
import type { Binding, KernelCost, Program } from '../gpu/program.js';

/** Shape of an attention call, as the references take it. */
export interface AttentionShape {
  B: number;
  Tq: number;
  Tk: number;
  /** Absolute position of query 0 (the cached token count in generation, 0 in training). */
  qStart: number;
  nHeads: number;
  nKv: number;
  headDim: number;
}

export interface AttentionArgs extends AttentionShape {
  q: Binding;
  k: Binding;
  v: Binding;
  out: Binding;
  /** f32 [B*Tq*nHeads], log-sum-exp of the scaled scores per query and head, for the backward. */
  lse: Binding;
  segQ: Binding;
  /** u32 segment ids per query token [B*Tq] and per key token [B*Tk]. */
  segK: Binding;
  variant?: AttentionVariant;
}

/**
 * Score of a masked (query, key) pair. Finite on purpose: WGSL lets compilers assume no infinities.
 * exp(MASKED - m) underflows to 0 for any running max m >= ROW_MAX_INIT, so masked keys add nothing.
 */
export const MASKED_SCORE = -3.0e38;
export const ROW_MAX_INIT = -1.0e30;

/**
 * How loops over the head dimension and over a tile's key or row quads are bounded: 'const' (generated into the
 * WGSL, so hardware compilers unroll them fully) or 'uniform' (read from the uniform: lavapipe's LLVM spends
 * minutes unrolling the constant form and gains nothing on a CPU). Either way the accumulators are written out
 * per element in the generated WGSL, never an indexed array (local memory on GPUs, a ladder of branches in
 * lavapipe's NIR).
 */
export type LoopBounds = 'const' | 'uniform';

/** Per-launch choices the tests force and the launchers otherwise take from the device. */
export interface AttentionVariant {
  bounds?: LoopBounds;
  /** Workgroup memory the tiles may use (default: the device's limit). */
  workgroupBytes?: number;
}

export function loopBoundsFor(gpu: Gpu, v?: AttentionVariant): LoopBounds {
  return v?.bounds ?? (gpu.software ? 'uniform' : 'const');
}

/** Each invocation owns a 4 x 4 block: 4 rows (queries, or keys in the backward) by 4 columns. */
export const BLOCK = 4;

/**
 * Row stride, in vec4, of a tile holding `quads` vec4 per row: odd, so that invocations reading the same column
 * of different rows hit different banks (a 16-byte access is served 8 invocations at a time; an odd stride spreads
 * 8 rows over all 32 banks).
 */
export function paddedQuads(quads: number): number {
  return quads % 2 === 1 ? quads : quads + 1;
}

/** Head-dim quads: head_dim values as vec4, the last one zero-padded. */
export function headQuads(headDim: number): number {
  return Math.ceil(headDim / 4);
}

/** Forward tiling: `rows` query rows (positions x heads of a kv group), 4 * keyLanes keys per key block. */
export interface ForwardTiles {
  rows: number;
  keyLanes: number;
  /** K and V take turns in one workgroup buffer (one more barrier per key block, a third less memory). */
  kvShared: boolean;
}

function forwardBytes(t: ForwardTiles, headDim: number): number {
  const row = paddedQuads(headQuads(headDim)) * 16;
  const keys = BLOCK * t.keyLanes;
  return t.rows * row + keys * row * (t.kvShared ? 1 : 2) + t.rows * paddedQuads(t.keyLanes) * 16 + keys * 4;
}

// Largest first: more rows reuse each K/V tile more, more keys per block mean fewer barriers.
const FORWARD_CHOICES: ForwardTiles[] = [
  [64, 8, false], [64, 8, true], [32, 8, false], [64, 4, false], [32, 8, true], [64, 4, true], [32, 4, false],
  [32, 4, true], [16, 4, false], [16, 4, true], [16, 2, true], [8, 2, true],
].map(([rows, keyLanes, kvShared]) => ({ rows: rows as number, keyLanes: keyLanes as number, kvShared: kvShared as boolean }));

/** The largest forward tiling whose workgroup memory fits `bytes` and whose rows hold a whole kv group. */
export function forwardTiles(headDim: number, group: number, bytes: number): ForwardTiles {
  const t = FORWARD_CHOICES.find((c) => c.rows >= group && forwardBytes(c, headDim) <= bytes);
  if (!t) throw new Error(`attention: head_dim ${headDim} with ${group} heads per kv head needs more than ${bytes} bytes of workgroup memory`);
  return t;
}

export function checkHeads(nHeads: number, nKv: number, headDim: number): void {
  if (!(nKv > 0 && nHeads % nKv === 0)) throw new Error(`attention: ${nHeads} query heads do not split over ${nKv} kv heads`);
  if (!(headDim > 0)) throw new Error(`attention: bad headDim ${headDim}`);
}

/** `f(0) sep f(1) sep ... f(n - 1)`: code written out per element of an invocation's block. */
export function unroll(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

/**
 * WGSL conjunction of `conditions` without short-circuit: `(a) & (b) & ...` on bools. Per-element masks of an
 * unrolled block use it: `&&` compiles to a branch per operand, and SwiftShader's compiler (Chromium's software
 * WebGPU) spends minutes and then crashes on the 48 nested branches of a 4 x 4 block; every operand here is a
 * cheap comparison or an in-bounds load, so evaluating all of them costs nothing on a GPU either.
 */
export function allOf(...conditions: string[]): string {
  return conditions.map((c) => `(${c})`).join(' & ');
}

/** WGSL `fn <name>(at: u32, d4: u32) -> vec4<f32>`: head-dim quad d4 of the row starting at `at`, zero past D. */
export function headQuadWgsl(name: string, array: string): string {
  return `fn ${name}(at: u32, d4: u32) -> vec4<f32> {
  let d = d4 * 4u;
  var x = vec4<f32>();
  if (d < D) { x.x = ${array}[at + d]; }
  if (d + 1u < D) { x.y = ${array}[at + d + 1u]; }
  if (d + 2u < D) { x.z = ${array}[at + d + 2u]; }
  if (d + 3u < D) { x.w = ${array}[at + d + 3u]; }
  return x;
}`;
}

/**
 * WGSL storing quad `x` to head-dim quad d4 of the row starting at `at`, lanes < D; where `keep` (a WGSL bool)
 * holds, x plus what is there.
 */
export function storeHeadQuadWgsl(array: string, at: string, d4: string, x: string, keep?: string): string {
  const lane = (off: string, c: string) =>
    `${array}[${at} + d${off}] = ${x}.${c}${keep ? ` + select(0.0, ${array}[${at} + d${off}], ${keep})` : ''};`;
  return `{
      let d = ${d4} * 4u;
      if (d < D) { ${lane('', 'x')} }
      if (d + 1u < D) { ${lane(' + 1u', 'y')} }
      if (d + 2u < D) { ${lane(' + 2u', 'z')} }
      if (d + 3u < D) { ${lane(' + 3u', 'w')} }
    }`;
}

/** Uniform fields holding the loop bounds in the 'uniform' variant (present, unused, in the 'const' one). */
export const LOOP_BOUND_FIELDS = { d4: 'u32', keyQuads: 'u32', rowQuads: 'u32' } as const;

const forwardLayout = kernelLayout({
  q: storage(),
  k: storage(),
  v: storage(),
  out: output(),
  lse: output(),
  segQ: storage('array<u32>'),
  segK: storage('array<u32>'),
  p: uniform({ B: 'u32', Tq: 'u32', Tk: 'u32', qStart: 'u32', nHeads: 'u32', nKv: 'u32', qBlocks: 'u32', scale: 'f32', ...LOOP_BOUND_FIELDS }),
});

/**
 * WGSL of the forward. A workgroup owns the rows (position, head) of `rows / group` positions and all `group`
 * query heads of one kv head, so each K/V tile staged serves the whole group. Invocation (rg, kl) owns rows
 * rg + RG i and keys kl + KL j (i, j < 4) of the score block, and the same rows by head-dim quads kl + KL e of
 * the output. Each invocation recomputes the row max and the probabilities of its rows from the score tile
 * itself, so the row statistics need no reduction across invocations (and no subgroup operations): every lane
 * of a row derives the same max and sum from the same values in the same order.
 */
export function attentionWgsl(headDim: number, group: number, t: ForwardTiles, bounds: LoopBounds): string {
  const D4 = headQuads(headDim);
  const RS = paddedQuads(D4);
  const KL = t.keyLanes;
  const RG = t.rows / BLOCK;
  const BK = BLOCK * KL;
  const SS = paddedQuads(KL);
  const OUT4 = Math.ceil(D4 / KL);
  const bound = (c: string, u: string) => (bounds === 'const' ? c : `p.${u}`);
  const rows = [0, 1, 2, 3];
  const vTile = t.kvShared ? 'kvTile' : 'vTile';
  const stageKv = (tile: string, array: string) => `for (var i = lid; i < BK * D4; i += WG) {
      let c = i / D4;
      let j = j0 + c;
      var x = vec4<f32>();
      if (j < p.Tk) { x = ${array}Quad((b * p.Tk + j) * kvStride + kvHead * D, i % D4); }
      ${tile}[c * RS + i % D4] = x;
    }`;
  return /* wgsl */ `
${forwardLayout.wgsl}

const D = ${headDim}u;
const D4 = ${D4}u;
const RS = ${RS}u;      // row stride of the Q, K and V tiles, in vec4
const G = ${group}u;    // query heads per kv head
const R = ${t.rows}u;   // rows of the block: (position, head of the group), position-major
const BQT = ${Math.floor(t.rows / group)}u; // positions per block
const RG = ${RG}u;
const KL = ${KL}u;
const BK = ${BK}u;
const SS = ${SS}u;      // row stride of the score tile, in vec4
const OUT4 = ${OUT4}u;  // output quads per invocation and row
const KQ = ${KL}u;      // key quads per block
const WG = ${RG * KL}u;
const MASKED = ${MASKED_SCORE};

var<workgroup> qTile: array<vec4<f32>, ${t.rows * RS}>;   // scaled queries of the block
${t.kvShared ? `var<workgroup> kvTile: array<vec4<f32>, ${BK * RS}>;  // keys, then values, of the key block` : `var<workgroup> kTile: array<vec4<f32>, ${BK * RS}>;
var<workgroup> vTile: array<vec4<f32>, ${BK * RS}>;`}
var<workgroup> sTile: array<vec4<f32>, ${t.rows * SS}>;  // scores of the key block, [row][key / 4]
var<workgroup> keySeg: array<u32, ${BK}>;

${headQuadWgsl('qQuad', 'q')}
${headQuadWgsl('kQuad', 'k')}
${headQuadWgsl('vQuad', 'v')}

${entryWgsl(RG * KL)} {
  let block = wid.x + wid.y * nwg.x;
  if (block >= p.B * p.nKv * p.qBlocks) { return; }
  let t0 = (block % p.qBlocks) * BQT;
  let kvHead = (block / p.qBlocks) % p.nKv;
  let b = block / (p.qBlocks * p.nKv);
  let qStride = p.nHeads * D;
  let kvStride = p.nKv * D;

  for (var i = lid; i < R * D4; i += WG) {
    let r = i / D4;
    let t = t0 + r / G;
    var x = vec4<f32>();
    if (r < BQT * G && t < p.Tq) { x = qQuad((b * p.Tq + t) * qStride + (kvHead * G + r % G) * D, i % D4) * p.scale; }
    qTile[r * RS + i % D4] = x;
  }

  let rg = lid / KL;
  let kl = lid % KL;
  // Row i of this invocation: r = rg + RG i, at position pos_i; ok_i when it is a real query.
${unroll(4, (i) => `  let r${i} = rg + ${RG * i}u;
  let pos${i} = t0 + r${i} / G;
  let ok${i} = ${allOf(`r${i} < BQT * G`, `pos${i} < p.Tq`)};
  let seg${i} = select(0u, segQ[b * p.Tq + min(pos${i}, p.Tq - 1u)], ok${i});
  var m${i} = ${ROW_MAX_INIT};  // running max
  var l${i} = 0.0;        // running sum of exp(score - m)`)}
  // o<i>_<e>: output row i, head-dim quad kl + KL e. Written out per e (OUT4 is small), so that no compiler
  // puts them in an indexed array: that is local memory on GPUs and a ladder of branches in lavapipe's NIR.
${unroll(4, (i) => `  ${unroll(OUT4, (e) => `var o${i}_${e} = vec4<f32>();`, ' ')}`)}

  // Keys after the block's last position are masked for every row: stop before them.
  let kEnd = min(p.Tk, p.qStart + min(t0 + BQT, p.Tq));
  for (var j0 = 0u; j0 < kEnd; j0 += BK) {
    workgroupBarrier();
    ${stageKv(t.kvShared ? 'kvTile' : 'kTile', 'k')}
    ${t.kvShared ? '' : stageKv('vTile', 'v')}
    if (lid < BK) { keySeg[lid] = segK[b * p.Tk + min(j0 + lid, p.Tk - 1u)]; }
    workgroupBarrier();

${unroll(4, (i) => `    var s${i} = vec4<f32>();`)}
    for (var d4 = 0u; d4 < ${bound('D4', 'd4')}; d4++) {
${unroll(4, (i) => `      let q${i} = qTile[r${i} * RS + d4];`)}
${unroll(4, (j) => `      let k${j} = ${t.kvShared ? 'kvTile' : 'kTile'}[(kl + ${KL * j}u) * RS + d4];`)}
${unroll(4, (i) => `      s${i} += vec4<f32>(dot(q${i}, k0), dot(q${i}, k1), dot(q${i}, k2), dot(q${i}, k3));`)}
    }
${rows.map((i) => unroll(4, (j) => {
    const c = `kl + ${KL * j}u`;
    return `    {
      let c = ${c};
      let j = j0 + c;
      let seen = ${allOf(`ok${i}`, 'j < p.Tk', `j <= p.qStart + pos${i}`, `seg${i} == keySeg[c]`)};
      sTile[r${i} * SS + c / 4u][c % 4u] = select(MASKED, s${i}[${j}], seen);
    }`;
  })).join('\n')}
    workgroupBarrier();
${t.kvShared ? `    ${stageKv('kvTile', 'v')}
    workgroupBarrier();` : ''}

    // New row max over the block; rescale what was summed under the old one.
${unroll(4, (i) => `    {
      var mx = m${i};
      for (var c4 = 0u; c4 < ${bound('KQ', 'keyQuads')}; c4++) {
        let x = sTile[r${i} * SS + c4];
        mx = max(mx, max(max(x.x, x.y), max(x.z, x.w)));
      }
      let alpha = exp(m${i} - mx);
      m${i} = mx;
      l${i} *= alpha;
${unroll(OUT4, (e) => `      o${i}_${e} *= alpha;`)}
    }`)}
    for (var c4 = 0u; c4 < ${bound('KQ', 'keyQuads')}; c4++) {
${unroll(4, (i) => `      let p${i} = exp(sTile[r${i} * SS + c4] - vec4<f32>(m${i}));
      l${i} += p${i}.x + p${i}.y + p${i}.z + p${i}.w;`)}
${unroll(OUT4, (e) => `      {
        let d4 = min(kl + ${KL * e}u, D4 - 1u);  // quads past D4 are computed and dropped
${unroll(4, (c) => `        let v${c} = ${vTile}[(c4 * 4u + ${c}u) * RS + d4];`)}
${unroll(4, (i) => `        o${i}_${e} += p${i}.x * v0 + p${i}.y * v1 + p${i}.z * v2 + p${i}.w * v3;`)}
      }`)}
    }
  }

${unroll(4, (i) => `  if (ok${i}) {
    // A query that sees no key (impossible with consistent segments) gets a zero output, not NaN.
    let seen = l${i} > 0.0;
    let inv = select(0.0, 1.0 / l${i}, seen);
    let row = (b * p.Tq + pos${i}) * p.nHeads + kvHead * G + r${i} % G;
    if (kl == 0u) { lse[row] = select(MASKED, m${i} + log(l${i}), seen); }
${unroll(OUT4, (e) => `    if (kl + ${KL * e}u < D4) ${storeHeadQuadWgsl('out', 'row * D', `(kl + ${KL * e}u)`, `(o${i}_${e} * inv)`)}`)}
  }`)}
}`;
}

type AttentionCall = Pick<AttentionArgs, 'B' | 'Tq' | 'Tk' | 'qStart' | 'nHeads' | 'nKv' | 'headDim' | 'variant'>;

/** A forward launch: its tiles, query positions per block, blocks along the queries, and uniform values. */
interface ForwardCall {
  tiles: ForwardTiles;
  positions: number;
  qBlocks: number;
  p: Record<keyof typeof forwardLayout.decls.p.fields, number>;
}

function forwardCall(gpu: Gpu, a: AttentionCall): ForwardCall {
  const group = a.nHeads / a.nKv;
  const tiles = forwardTiles(a.headDim, group, a.variant?.workgroupBytes ?? gpu.workgroupBytes);
  const positions = Math.floor(tiles.rows / group);
  const qBlocks = Math.ceil(a.Tq / positions);
  const p = {
    B: a.B, Tq: a.Tq, Tk: a.Tk, qStart: a.qStart, nHeads: a.nHeads, nKv: a.nKv, qBlocks, scale: 1 / Math.sqrt(a.headDim),
    d4: headQuads(a.headDim), keyQuads: tiles.keyLanes, rowQuads: tiles.rows / BLOCK,
  };
  return { tiles, positions, qBlocks, p };
}

/** Record the attention forward; returns its uniform buffer, which `setAttentionKeys` rewrites. */
export function recordAttention(prog: Program, a: AttentionArgs, label = 'attention'): GPUBuffer {
  checkHeads(a.nHeads, a.nKv, a.headDim);
  const gpu = prog.gpu;
  const call = forwardCall(gpu, a);
  const { tiles, qBlocks, p } = call;
  const params = uniformBuffer(gpu, forwardLayout.decls.p, p, `${label} params`);
  const code = attentionWgsl(a.headDim, a.nHeads / a.nKv, tiles, loopBoundsFor(gpu, a.variant));
  const { q, k, v, out, lse, segQ, segK } = a;
  forwardLayout.dispatch(prog, label, code, { q, k, v, out, lse, segQ, segK, p: params }, a.B * a.nKv * qBlocks, forwardCost(a, call));
  return params;
}

/**
 * What the forward executes, masked scores included: each workgroup multiplies its `rows` rows with every key
 * block it visits (2·D FLOP for the score, 2·D for P·V per row and key), reads its Q rows, K and V of the visited
 * blocks, and writes its output rows.
 */
function forwardCost(a: AttentionCall, { tiles: t, positions, qBlocks }: ForwardCall): KernelCost {
  const BK = BLOCK * t.keyLanes;
  let keys = 0;
  for (let qb = 0; qb < qBlocks; qb++) {
    const kEnd = Math.min(a.Tk, a.qStart + Math.min((qb + 1) * positions, a.Tq));
    keys += Math.ceil(kEnd / BK) * BK;
  }
  const groups = a.B * a.nKv;
  const rowBytes = 4 * a.headDim;
  return {
    flops: groups * t.rows * keys * 4 * a.headDim,
    bytes: groups * (keys * 2 * rowBytes + qBlocks * 2 * t.rows * rowBytes),
  };
}

/**
 * Generation: point a recorded attention at another cache length without re-recording it (Tq, and so the grid,
 * stay as recorded; the key buffers must hold Tk rows).
 */
export function setAttentionKeys(gpu: Gpu, params: GPUBuffer, a: AttentionCall): void {
  writeUniform(gpu, params, forwardLayout.decls.p, forwardCall(gpu, a).p);
}

/** Whether query t of row b (absolute position qStart + t) may attend key j of the same row. */
export function attends(s: AttentionShape, segQ: ArrayLike<number>, segK: ArrayLike<number>, b: number, t: number, j: number): boolean {
  return j <= s.qStart + t && segQ[b * s.Tq + t] === segK[b * s.Tk + j];
}

/** Plain-TS reference: explicit softmax over the allowed keys, in double precision. */
export function attentionRef(
  q: Float32Array, k: Float32Array, v: Float32Array, segQ: Uint32Array, segK: Uint32Array, s: AttentionShape,
): { out: Float32Array; lse: Float32Array } {
  const { B, Tq, Tk, nHeads, nKv, headDim: D } = s;
  const scale = 1 / Math.sqrt(D);
  const group = nHeads / nKv;
  const out = new Float32Array(B * Tq * nHeads * D);
  const lse = new Float32Array(B * Tq * nHeads);
  const scores = new Float64Array(Tk); // scaled scores, then unnormalised probabilities
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nHeads; h++) {
      const kvOff = Math.floor(h / group) * D;
      for (let t = 0; t < Tq; t++) {
        const qOff = (b * Tq + t) * nHeads * D + h * D;
        let max = -Infinity;
        for (let j = 0; j < Tk; j++) {
          if (!attends(s, segQ, segK, b, t, j)) { scores[j] = -Infinity; continue; }
          const kOff = (b * Tk + j) * nKv * D + kvOff;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qOff + d]! * k[kOff + d]!;
          scores[j] = dot * scale;
          max = Math.max(max, scores[j]!);
        }
        let sum = 0;
        for (let j = 0; j < Tk; j++) {
          scores[j] = scores[j] === -Infinity ? 0 : Math.exp(scores[j]! - max);
          sum += scores[j]!;
        }
        lse[(b * Tq + t) * nHeads + h] = sum > 0 ? max + Math.log(sum) : MASKED_SCORE;
        if (sum === 0) continue;
        for (let d = 0; d < D; d++) {
          let x = 0;
          for (let j = 0; j < Tk; j++) x += scores[j]! * v[(b * Tk + j) * nKv * D + kvOff + d]!;
          out[qOff + d] = x / sum;
        }
      }
    }
  }
  return { out, lse };
}
