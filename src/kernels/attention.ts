// Causal grouped-query attention, forward, flash-style: a workgroup owns a block of queries of one (batch row,
// head), streams key/value blocks through workgroup memory and keeps a running max and sum per query (online
// softmax), so no T x T score matrix ever reaches global memory. Saves the log-sum-exp per query and head for
// the backward, which recomputes the probabilities from it.
import type { Gpu, Param } from '../gpu/device.js';
import type { Binding, Program } from '../gpu/program.js';

export interface AttentionArgs {
  q: Binding;
  k: Binding;
  v: Binding;
  out: Binding;
  /** f32 [B*Tq*nHeads], log-sum-exp of the scaled scores per query and head, for the backward. */
  lse: Binding;
  segQ: Binding;
  /** u32 segment ids per query token [B*Tq] and per key token [B*Tk]. */
  segK: Binding;
  B: number;
  Tq: number;
  Tk: number;
  /** Absolute position of query 0 (the cached token count in generation, 0 in training). */
  qStart: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  label?: string;
}

/** Shape of an attention call, as the references take it. */
export interface AttentionShape {
  B: number;
  Tq: number;
  Tk: number;
  qStart: number;
  nHeads: number;
  nKv: number;
  headDim: number;
}

/** Workgroup memory the kernels here may use (the portable WebGPU minimum). */
export const WORKGROUP_BYTES = 16384;

/**
 * Score of a masked (query, key) pair, and the initial running max. Finite on purpose: WGSL lets compilers assume
 * no infinities. exp(MASKED - m) underflows to 0 for any m >= ROW_MAX_INIT, so masked keys add nothing.
 */
export const MASKED_SCORE = -3.0e38;
const ROW_MAX_INIT = -1.0e30;

const FWD_THREADS = 128;
const FWD_QUERIES = 16;

/** Tiling of one kernel: keys and queries per block, accumulator values per thread. */
export interface AttentionTiles {
  keys: number;
  queries: number;
  accPerThread: number;
}

/**
 * The kernels here take their loop bounds (head dim, block sizes, accumulators per thread) from the uniform rather
 * than from constants: with constant bounds lavapipe's LLVM fully unrolls the nested loops and one pipeline takes
 * minutes to compile. These are the uniform fields, in the order the Params structs end with them.
 */
export function loopBoundParams(headDim: number, t: AttentionTiles): Param[] {
  return [['u32', headDim], ['u32', t.keys], ['u32', t.queries], ['u32', t.accPerThread]];
}
export const LOOP_BOUND_FIELDS = 'headDim: u32, keyBlock: u32, queryBlock: u32, accPerThread: u32';

/** Largest key block (of 32, 16, 8) whose Q tile, K/V tile and probabilities fit workgroup memory. */
function forwardTiles(headDim: number): AttentionTiles {
  for (const keys of [32, 16, 8]) {
    const bytes = 4 * (FWD_QUERIES * headDim + keys * headDim + FWD_QUERIES * keys + FWD_QUERIES);
    if (bytes <= WORKGROUP_BYTES) return { keys, queries: FWD_QUERIES, accPerThread: Math.ceil(headDim / (FWD_THREADS / FWD_QUERIES)) };
  }
  throw new Error(`attention: headDim ${headDim} is too large for the workgroup memory`);
}

export function checkHeads(nHeads: number, nKv: number, headDim: number): void {
  if (!(nKv > 0 && nHeads % nKv === 0)) throw new Error(`attention: ${nHeads} query heads do not split over ${nKv} kv heads`);
  if (!(headDim > 0)) throw new Error(`attention: bad headDim ${headDim}`);
}

/** WGSL of the forward for one head size (the per-thread accumulator length depends on it). */
export function attentionWgsl(headDim: number): string {
  const D = headDim;
  const { keys: BK, queries: BQ, accPerThread: NACC } = forwardTiles(D);
  const WG = FWD_THREADS;
  const LANES = WG / BQ; // threads sharing one query's output row
  return /* wgsl */ `
struct Params { B: u32, Tq: u32, Tk: u32, qStart: u32, nHeads: u32, nKv: u32, qBlocks: u32, scale: f32, ${LOOP_BOUND_FIELDS} }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<storage, read> segQ: array<u32>;
@group(0) @binding(6) var<storage, read> segK: array<u32>;
@group(0) @binding(7) var<uniform> p: Params;

const D = ${D}u;
const BQ = ${BQ}u;
const BK = ${BK}u;
const WG = ${WG}u;
const LANES = ${LANES}u;
const NACC = ${NACC}u;
const MASKED = ${MASKED_SCORE};

var<workgroup> qTile: array<f32, ${BQ * D}>;   // scaled queries of the block
var<workgroup> kvTile: array<f32, ${BK * D}>;  // keys, then values, of the current key block
var<workgroup> probs: array<f32, ${BQ * BK}>;  // scores, then exp(score - running max)
var<workgroup> rowScale: array<f32, ${BQ}>;    // per query: rescale of the accumulator this step, 1/sum at the end

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let block = wid.x + wid.y * nwg.x;
  if (block >= p.B * p.nHeads * p.qBlocks) { return; }
  let t0 = (block % p.qBlocks) * BQ;
  let h = (block / p.qBlocks) % p.nHeads;
  let b = block / (p.qBlocks * p.nHeads);
  let kvHead = h / (p.nHeads / p.nKv);
  let qStride = p.nHeads * D;
  let kvStride = p.nKv * D;

  for (var i = lid; i < BQ * D; i += WG) {
    let t = t0 + i / D;
    var x = 0.0;
    if (t < p.Tq) { x = q[(b * p.Tq + t) * qStride + h * D + i % D] * p.scale; }
    qTile[i] = x;
  }

  let row = lid / LANES;
  let lane = lid % LANES;
  var acc: array<f32, NACC>;
  // Running max and sum of query lid, kept by threads lid < BQ.
  var rowMax = ${ROW_MAX_INIT};
  var rowSum = 0.0;

  // Keys after the block's last query position are masked for every query here: stop before them.
  let kEnd = min(p.Tk, p.qStart + min(t0 + BQ, p.Tq));
  for (var j0 = 0u; j0 < kEnd; j0 += BK) {
    workgroupBarrier();
    for (var i = lid; i < BK * D; i += WG) {
      let j = j0 + i / D;
      var x = 0.0;
      if (j < p.Tk) { x = k[(b * p.Tk + j) * kvStride + kvHead * D + i % D]; }
      kvTile[i] = x;
    }
    workgroupBarrier();
    for (var s = lid; s < BQ * BK; s += WG) {
      let r = s / BK;
      let c = s % BK;
      let t = t0 + r;
      let j = j0 + c;
      var score = MASKED;
      if (t < p.Tq && j < p.Tk && j <= p.qStart + t && segQ[b * p.Tq + t] == segK[b * p.Tk + j]) {
        var dot = 0.0;
        for (var d = 0u; d < p.headDim; d++) { dot += qTile[r * D + d] * kvTile[c * D + d]; }
        score = dot;
      }
      probs[s] = score;
    }
    workgroupBarrier();
    if (lid < BQ) {
      var newMax = rowMax;
      for (var c = 0u; c < p.keyBlock; c++) { newMax = max(newMax, probs[lid * BK + c]); }
      var sum = 0.0;
      for (var c = 0u; c < p.keyBlock; c++) {
        let e = exp(probs[lid * BK + c] - newMax);
        probs[lid * BK + c] = e;
        sum += e;
      }
      let alpha = exp(rowMax - newMax);
      rowSum = rowSum * alpha + sum;
      rowMax = newMax;
      rowScale[lid] = alpha;
    }
    workgroupBarrier();
    for (var i = lid; i < BK * D; i += WG) {
      let j = j0 + i / D;
      var x = 0.0;
      if (j < p.Tk) { x = v[(b * p.Tk + j) * kvStride + kvHead * D + i % D]; }
      kvTile[i] = x;
    }
    workgroupBarrier();
    let alpha = rowScale[row];
    for (var a = 0u; a < p.accPerThread; a++) {
      let d = lane + a * LANES;
      if (d < D) {
        var x = acc[a] * alpha;
        for (var c = 0u; c < p.keyBlock; c++) { x += probs[row * BK + c] * kvTile[c * D + d]; }
        acc[a] = x;
      }
    }
  }

  workgroupBarrier();
  if (lid < BQ) {
    // A query that sees no key (impossible with consistent segments) gets a zero output, not NaN.
    let seen = rowSum > 0.0;
    rowScale[lid] = select(0.0, 1.0 / rowSum, seen);
    let t = t0 + lid;
    if (t < p.Tq) { lse[(b * p.Tq + t) * p.nHeads + h] = select(MASKED, rowMax + log(rowSum), seen); }
  }
  workgroupBarrier();
  let t = t0 + row;
  if (t < p.Tq) {
    let inv = rowScale[row];
    for (var a = 0u; a < p.accPerThread; a++) {
      let d = lane + a * LANES;
      if (d < D) { out[(b * p.Tq + t) * qStride + h * D + d] = acc[a] * inv; }
    }
  }
}`;
}

type AttentionCall = Pick<AttentionArgs, 'B' | 'Tq' | 'Tk' | 'qStart' | 'nHeads' | 'nKv' | 'headDim'>;

function attentionParams(a: AttentionCall): Param[] {
  return [
    ['u32', a.B], ['u32', a.Tq], ['u32', a.Tk], ['u32', a.qStart],
    ['u32', a.nHeads], ['u32', a.nKv], ['u32', Math.ceil(a.Tq / FWD_QUERIES)], ['f32', 1 / Math.sqrt(a.headDim)],
    ...loopBoundParams(a.headDim, forwardTiles(a.headDim)),
  ];
}

/** Record the attention forward; returns its uniform buffer, which `setAttentionKeys` rewrites. */
export function recordAttention(prog: Program, a: AttentionArgs): GPUBuffer {
  checkHeads(a.nHeads, a.nKv, a.headDim);
  const params = prog.gpu.uniform(attentionParams(a), 'attention params');
  prog.add(a.label ?? 'attention', attentionWgsl(a.headDim), [a.q, a.k, a.v, a.out, a.lse, a.segQ, a.segK, params], a.B * a.nHeads * Math.ceil(a.Tq / FWD_QUERIES));
  return params;
}

/**
 * Generation: point a recorded attention at another cache length without re-recording it (Tq, and so the grid,
 * stay as recorded; the key buffers must hold Tk rows).
 */
export function setAttentionKeys(gpu: Gpu, params: GPUBuffer, a: AttentionCall): void {
  gpu.rewriteUniform(params, attentionParams(a));
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
