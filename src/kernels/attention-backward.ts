// Backward of causal GQA attention for training (Tq = Tk = T, qStart = 0), flash-style: probabilities are
// recomputed block by block from q, k and the forward's log-sum-exp, never stored. WGSL has no float atomics,
// so every output element has one owner: one pass over key blocks owns dK and dV (summing all query heads of
// the kv group), another over query blocks owns dQ. A small first pass packs, per query and head,
// lse, D = rowsum(dOut * out) and the query's segment into one scratch buffer, which keeps the other passes
// within 8 storage bindings.
//   P = exp(scale * q.k - lse), dV = P^T dO, dP = dO V^T, dS = P * (dP - D), dQ = scale dS K, dK = scale dS^T Q
import type { Binding, Program } from '../gpu/program.js';
import { attends, checkHeads, LOOP_BOUND_FIELDS, loopBoundParams, WORKGROUP_BYTES, type AttentionTiles } from './attention.js';

export interface AttentionBackwardArgs {
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
  B: number;
  T: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  label?: string;
}

export interface AttentionBackwardShape {
  B: number;
  T: number;
  nHeads: number;
  nKv: number;
  headDim: number;
}

/** Bytes per (query, head) of the packed scratch: lse f32, delta f32, segment u32. */
const STAT_BYTES = 12;
const STAT_STRUCT = 'struct QueryStat { lse: f32, delta: f32, seg: u32 }';

const STATS_THREADS = 64;

export const attentionStatsWgsl = /* wgsl */ `
${STAT_STRUCT}
struct Params { rows: u32, nHeads: u32, headDim: u32 }
@group(0) @binding(0) var<storage, read> out: array<f32>;
@group(0) @binding(1) var<storage, read> dOut: array<f32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> segQ: array<u32>;
@group(0) @binding(4) var<storage, read_write> stats: array<QueryStat>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(${STATS_THREADS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  // row = token * nHeads + head, and that head's slice of out starts at row * headDim.
  let row = (wid.x + wid.y * nwg.x) * ${STATS_THREADS}u + lid;
  if (row >= p.rows) { return; }
  var delta = 0.0;
  for (var d = 0u; d < p.headDim; d++) { delta += out[row * p.headDim + d] * dOut[row * p.headDim + d]; }
  stats[row] = QueryStat(lse[row], delta, segQ[row / p.nHeads]);
}`;

// dK/dV pass: a workgroup owns KV_KEYS keys of one (batch row, kv head).
const KV_THREADS = 256;
const KV_KEYS = 32;

function kvTiles(headDim: number): AttentionTiles {
  for (const queries of [32, 16, 8]) {
    const bytes = 4 * (2 * queries * headDim + 2 * KV_KEYS * queries + 3 * queries);
    if (bytes <= WORKGROUP_BYTES) return { keys: KV_KEYS, queries, accPerThread: Math.ceil(headDim / (KV_THREADS / KV_KEYS)) };
  }
  throw new Error(`attention backward: headDim ${headDim} is too large for the workgroup memory`);
}

export function attentionKvGradWgsl(headDim: number): string {
  const D = headDim;
  const { keys: BK, queries: BQ, accPerThread: NACC } = kvTiles(D);
  const WG = KV_THREADS;
  const LANES = WG / BK;
  return /* wgsl */ `
${STAT_STRUCT}
struct Params { B: u32, T: u32, nHeads: u32, nKv: u32, kBlocks: u32, scale: f32, ${LOOP_BOUND_FIELDS} }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> dOut: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<QueryStat>;
@group(0) @binding(5) var<storage, read> segK: array<u32>;
@group(0) @binding(6) var<storage, read_write> dk: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;

const D = ${D}u;
const BQ = ${BQ}u;
const BK = ${BK}u;
const WG = ${WG}u;
const LANES = ${LANES}u;
const NACC = ${NACC}u;

var<workgroup> qTile: array<f32, ${BQ * D}>;
var<workgroup> dOutTile: array<f32, ${BQ * D}>;
var<workgroup> probs: array<f32, ${BK * BQ}>;      // [key][query]
var<workgroup> scoreGrad: array<f32, ${BK * BQ}>;  // dS, [key][query]
var<workgroup> rowLse: array<f32, ${BQ}>;
var<workgroup> rowDelta: array<f32, ${BQ}>;
var<workgroup> rowSeg: array<u32, ${BQ}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let block = wid.x + wid.y * nwg.x;
  if (block >= p.B * p.nKv * p.kBlocks) { return; }
  let j0 = (block % p.kBlocks) * BK;
  let kvHead = (block / p.kBlocks) % p.nKv;
  let b = block / (p.kBlocks * p.nKv);
  let group = p.nHeads / p.nKv;
  let qStride = p.nHeads * D;
  let kvStride = p.nKv * D;

  let key = lid / LANES;
  let lane = lid % LANES;
  var dkAcc: array<f32, NACC>;
  var dvAcc: array<f32, NACC>;

  for (var hh = 0u; hh < group; hh++) {
    let h = kvHead * group + hh;
    // Queries before the first key of the block see none of it.
    for (var t0 = (j0 / BQ) * BQ; t0 < p.T; t0 += BQ) {
      workgroupBarrier();
      for (var i = lid; i < BQ * D; i += WG) {
        let t = t0 + i / D;
        var x = 0.0;
        var g = 0.0;
        if (t < p.T) {
          let at = (b * p.T + t) * qStride + h * D + i % D;
          x = q[at];
          g = dOut[at];
        }
        qTile[i] = x;
        dOutTile[i] = g;
      }
      if (lid < BQ && t0 + lid < p.T) {
        let st = stats[(b * p.T + t0 + lid) * p.nHeads + h];
        rowLse[lid] = st.lse;
        rowDelta[lid] = st.delta;
        rowSeg[lid] = st.seg;
      }
      workgroupBarrier();
      for (var s = lid; s < BK * BQ; s += WG) {
        let c = s / BQ;
        let r = s % BQ;
        let j = j0 + c;
        let t = t0 + r;
        var pr = 0.0;
        var ds = 0.0;
        if (t < p.T && j < p.T && j <= t && rowSeg[r] == segK[b * p.T + j]) {
          let kvAt = (b * p.T + j) * kvStride + kvHead * D;
          var score = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < p.headDim; d++) {
            score += qTile[r * D + d] * k[kvAt + d];
            dp += dOutTile[r * D + d] * v[kvAt + d];
          }
          pr = exp(score * p.scale - rowLse[r]);
          ds = pr * (dp - rowDelta[r]);
        }
        probs[s] = pr;
        scoreGrad[s] = ds;
      }
      workgroupBarrier();
      for (var a = 0u; a < p.accPerThread; a++) {
        let d = lane + a * LANES;
        if (d < D) {
          var gv = dvAcc[a];
          var gk = dkAcc[a];
          for (var r = 0u; r < p.queryBlock; r++) {
            gv += probs[key * BQ + r] * dOutTile[r * D + d];
            gk += scoreGrad[key * BQ + r] * qTile[r * D + d];
          }
          dvAcc[a] = gv;
          dkAcc[a] = gk;
        }
      }
    }
  }

  let j = j0 + key;
  if (j < p.T) {
    let kvAt = (b * p.T + j) * kvStride + kvHead * D;
    for (var a = 0u; a < p.accPerThread; a++) {
      let d = lane + a * LANES;
      if (d < D) {
        dk[kvAt + d] = dkAcc[a] * p.scale;
        dv[kvAt + d] = dvAcc[a];
      }
    }
  }
}`;
}

// dQ pass: a workgroup owns Q_QUERIES queries of one (batch row, head).
const Q_THREADS = 128;
const Q_QUERIES = 16;

function qTiles(headDim: number): AttentionTiles {
  for (const keys of [32, 16, 8]) {
    const bytes = 4 * (2 * keys * headDim + Q_QUERIES * keys);
    if (bytes <= WORKGROUP_BYTES) return { keys, queries: Q_QUERIES, accPerThread: Math.ceil(headDim / (Q_THREADS / Q_QUERIES)) };
  }
  throw new Error(`attention backward: headDim ${headDim} is too large for the workgroup memory`);
}

export function attentionQGradWgsl(headDim: number): string {
  const D = headDim;
  const { keys: BK, queries: BQ, accPerThread: NACC } = qTiles(D);
  const WG = Q_THREADS;
  const LANES = WG / BQ;
  return /* wgsl */ `
${STAT_STRUCT}
struct Params { B: u32, T: u32, nHeads: u32, nKv: u32, qBlocks: u32, scale: f32, ${LOOP_BOUND_FIELDS} }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> dOut: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<QueryStat>;
@group(0) @binding(5) var<storage, read> segK: array<u32>;
@group(0) @binding(6) var<storage, read_write> dq: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

const D = ${D}u;
const BQ = ${BQ}u;
const BK = ${BK}u;
const WG = ${WG}u;
const LANES = ${LANES}u;
const NACC = ${NACC}u;

var<workgroup> kTile: array<f32, ${BK * D}>;
var<workgroup> vTile: array<f32, ${BK * D}>;
var<workgroup> scoreGrad: array<f32, ${BQ * BK}>;  // dS, [query][key]

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

  let row = lid / LANES;
  let lane = lid % LANES;
  var dqAcc: array<f32, NACC>;

  // Keys after the block's last query are masked for all of its queries.
  let kEnd = min(t0 + BQ, p.T);
  for (var j0 = 0u; j0 < kEnd; j0 += BK) {
    workgroupBarrier();
    for (var i = lid; i < BK * D; i += WG) {
      let j = j0 + i / D;
      var kx = 0.0;
      var vx = 0.0;
      if (j < p.T) {
        let at = (b * p.T + j) * kvStride + kvHead * D + i % D;
        kx = k[at];
        vx = v[at];
      }
      kTile[i] = kx;
      vTile[i] = vx;
    }
    workgroupBarrier();
    for (var s = lid; s < BQ * BK; s += WG) {
      let r = s / BK;
      let c = s % BK;
      let t = t0 + r;
      let j = j0 + c;
      var ds = 0.0;
      if (t < p.T && j <= t) {
        let st = stats[(b * p.T + t) * p.nHeads + h];
        if (st.seg == segK[b * p.T + j]) {
          let qAt = (b * p.T + t) * qStride + h * D;
          var score = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < p.headDim; d++) {
            score += q[qAt + d] * kTile[c * D + d];
            dp += dOut[qAt + d] * vTile[c * D + d];
          }
          let pr = exp(score * p.scale - st.lse);
          ds = pr * (dp - st.delta);
        }
      }
      scoreGrad[s] = ds;
    }
    workgroupBarrier();
    for (var a = 0u; a < p.accPerThread; a++) {
      let d = lane + a * LANES;
      if (d < D) {
        var g = dqAcc[a];
        for (var c = 0u; c < p.keyBlock; c++) { g += scoreGrad[row * BK + c] * kTile[c * D + d]; }
        dqAcc[a] = g;
      }
    }
  }

  let t = t0 + row;
  if (t < p.T) {
    let qAt = (b * p.T + t) * qStride + h * D;
    for (var a = 0u; a < p.accPerThread; a++) {
      let d = lane + a * LANES;
      if (d < D) { dq[qAt + d] = dqAcc[a] * p.scale; }
    }
  }
}`;
}

/** Appends the three passes; allocates the packed per-query scratch (B*T*nHeads entries) once, here. */
export function recordAttentionBackward(prog: Program, a: AttentionBackwardArgs): void {
  checkHeads(a.nHeads, a.nKv, a.headDim);
  const label = a.label ?? 'attention backward';
  const gpu = prog.gpu;
  const scale = 1 / Math.sqrt(a.headDim);
  const rows = a.B * a.T * a.nHeads;
  const stats = gpu.storage(rows * STAT_BYTES, `${label} stats`);

  const statsParams = gpu.uniform([['u32', rows], ['u32', a.nHeads], ['u32', a.headDim]], `${label} stats params`);
  prog.add(`${label} stats`, attentionStatsWgsl, [a.out, a.dOut, a.lse, a.segQ, stats, statsParams], Math.ceil(rows / STATS_THREADS));

  const kBlocks = Math.ceil(a.T / KV_KEYS);
  const kvParams = gpu.uniform([
    ['u32', a.B], ['u32', a.T], ['u32', a.nHeads], ['u32', a.nKv], ['u32', kBlocks], ['f32', scale],
    ...loopBoundParams(a.headDim, kvTiles(a.headDim)),
  ], `${label} dkv params`);
  prog.add(`${label} dk dv`, attentionKvGradWgsl(a.headDim), [a.q, a.k, a.v, a.dOut, stats, a.segK, a.dk, a.dv, kvParams], a.B * a.nKv * kBlocks);

  const qBlocks = Math.ceil(a.T / Q_QUERIES);
  const qParams = gpu.uniform([
    ['u32', a.B], ['u32', a.T], ['u32', a.nHeads], ['u32', a.nKv], ['u32', qBlocks], ['f32', scale],
    ...loopBoundParams(a.headDim, qTiles(a.headDim)),
  ], `${label} dq params`);
  prog.add(`${label} dq`, attentionQGradWgsl(a.headDim), [a.q, a.k, a.v, a.dOut, stats, a.segK, a.dq, qParams], a.B * a.nHeads * qBlocks);
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
