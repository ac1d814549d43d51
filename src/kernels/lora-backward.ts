// The LoRA path's backward of one adapted projection, y += s·(x·Aᵀ)·Bᵀ with t = x·Aᵀ [N, r] kept by the forward,
// in one dispatch, and one fixed-order sum per layer that adds the factor gradients' partial sums:
//   dT[n, j]  = s · Σ_o dy[n, o] · B[o, j]                  (whole, [N, r]: the input gradient reads it next)
//   dB[o, j] += s · Σ_n dy[n, o] · t[n, j]
//   dA[j, i] += Σ_n dT[n, j] · x[n, i]                      (x: the LoRA input, the dropped one under dropout)
// dB and dA reduce over every token. One workgroup per token chunk c (tokens c·span .. c·span+span−1) writes
// its own partial sums partial[c][·], laid out like the layer's gradients; after the layer's last projection
// one dispatch per piece (below) adds Σ_c partial[c] into the gradients in the order c = 0, 1, …
//
// Inside a chunk, tokens go in tiles of `tokens` rows (what fits 16 KiB of workgroup memory, WebGPU's
// guaranteed amount, with the rank); for each tile, dy in tiles of `outs` columns:
//   dB part:   s · Σ_{n in tile} dy[n, o] · t[n, j]            (first token tile writes the partial, later ones add)
//   dT:        Σ_o dy[n, o] · B[o, j], carried across the out tiles in workgroup memory, then scaled by s
//   dA part:   Σ_{n in tile} dT[n, j] · x[n, i]                (dT of the tile read from workgroup memory)
// Every output element is owned by one invocation and summed serially in a fixed order (no atomics, no
// order that depends on scheduling), so the gradients are bitwise the same run after run.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { alignUp, RANGE_ALIGN, type Binding, type BufferRange, type Program } from '../gpu/program.js';
import { programScratch } from './scratch.js';

const WG = 256;
/** Workgroup memory the kernel plans for: 16 KiB, the least every WebGPU device offers. */
const WORKGROUP_FLOATS = 4096;
/** Token rows per tile at most (at rank 8: 64, so 0.6B's 2048 tokens make 32 chunks). */
const MAX_TILE_TOKENS = 64;
/**
 * Chunks (workgroups) per projection at most. Enough to spread over a large GPU; more would grow the partial
 * scratch (chunks × one layer's gradients: 0.6B, r 8, 32 chunks = 23 MB) and the per-layer sum's reads.
 */
export const MAX_CHUNKS = 64;

/** The tile of one workgroup step: `tokens` rows of dy, t and x, `outs` columns of dy (rows of B). */
export interface LoraBackwardTile {
  tokens: number;
  outs: number;
}

/** How the tokens are split: `chunks` workgroups of `span` tokens (a multiple of the tile's), the last shorter. */
export interface LoraBackwardPlan {
  tile: LoraBackwardTile;
  span: number;
  chunks: number;
}

/** Workgroup floats of a tile: dy (rows padded by one against bank conflicts), t, B rows and dT (rank padded to 4). */
export function loraBackwardTileFloats(r: number, t: LoraBackwardTile): number {
  return t.tokens * (t.outs + 1) + (2 * t.tokens + t.outs) * padRank(r);
}

function padRank(r: number): number {
  return Math.ceil(r / 4) * 4;
}

/** The largest tile (up to 64 tokens x 32 outs) that fits the workgroup memory at rank r; none past rank 1364. */
export function loraBackwardTile(r: number): LoraBackwardTile | undefined {
  for (let outs = 32; outs >= 1; outs /= 2) {
    const tokens = Math.min(MAX_TILE_TOKENS, Math.floor((WORKGROUP_FLOATS - outs * padRank(r)) / (outs + 1 + 2 * padRank(r))));
    if (tokens >= 8 || (outs === 1 && tokens >= 1)) return { tokens, outs };
  }
  return undefined;
}

/**
 * The chunking of N tokens: one tile per chunk up to MAX_CHUNKS chunks, longer chunks beyond; and never more
 * chunks than a partial scratch of one binding holds (`stride` floats each). Undefined if not even one chunk's
 * slice fits, or no tile at this rank. Depends on the shapes alone.
 */
export function loraBackwardPlan(N: number, r: number, stride: number, maxBindingBytes: number): LoraBackwardPlan | undefined {
  const tile = loraBackwardTile(r);
  const fit = Math.floor(maxBindingBytes / (4 * stride));
  if (!tile || fit < 1) return undefined;
  const want = Math.min(Math.ceil(N / tile.tokens), MAX_CHUNKS, fit);
  const span = Math.ceil(Math.ceil(N / want) / tile.tokens) * tile.tokens;
  return { tile, span, chunks: Math.max(1, Math.ceil(N / span)) };
}

/** A run of a layer's gradients that lie in one flat buffer as they lie in a chunk's partial slice: one sum. */
export interface PartialPiece {
  buffer: GPUBuffer;
  /** Floats: the run's start in the gradient buffer and in each chunk's slice, and its length. */
  gradOffset: number;
  partialOffset: number;
  count: number;
}

/**
 * Where a layer's gradients lie in each chunk's slice of the partial scratch: in the given order, each at the
 * next RANGE_ALIGN (256-byte) boundary (as the flat layout places them in one buffer). The slice depends on the ranges' sizes
 * alone, so every layer of a model writes the same positions, and the gaps between them, zero when the scratch
 * is made, stay zero. Runs of ranges that lie in one flat buffer with the same gaps form one piece each.
 */
export class PartialLayout {
  /** Floats per chunk. */
  readonly stride: number;
  readonly pieces: PartialPiece[] = [];
  private readonly at: number[] = [];

  constructor(readonly ranges: BufferRange[]) {
    let end = 0;
    for (const r of ranges) {
      if (r.offset % RANGE_ALIGN !== 0 || r.size % 4 !== 0) throw new Error(`gradient range at ${r.offset} (${r.size} bytes) is not 256-aligned`);
      const at = alignUp(end, RANGE_ALIGN / 4);
      this.at.push(at);
      end = at + r.size / 4;
      const last = this.pieces[this.pieces.length - 1];
      if (last && last.buffer === r.buffer && r.offset / 4 - last.gradOffset === at - last.partialOffset) {
        last.count = end - last.partialOffset;
      } else {
        this.pieces.push({ buffer: r.buffer, gradOffset: r.offset / 4, partialOffset: at, count: r.size / 4 });
      }
    }
    this.stride = Math.max(RANGE_ALIGN / 4, alignUp(end, RANGE_ALIGN / 4));
  }

  /** Float offset of a range (one of those given) within a chunk's slice. */
  offsetOf(range: BufferRange): number {
    const k = this.ranges.findIndex((r) => r.buffer === range.buffer && r.offset === range.offset);
    if (k < 0) throw new Error(`gradient range at ${range.offset} is not in this layer's layout`);
    return this.at[k]!;
  }

  /** Positions written, as a key: layouts with the same key can share a scratch. */
  get key(): string {
    return `${this.stride}:${this.ranges.map((r, k) => `${this.at[k]}+${r.size / 4}`).join(',')}`;
  }
}

/** One layer's partial sums: their layout, the chunking, and the scratch (chunks × stride floats). */
export interface LoraPartials {
  layout: PartialLayout;
  plan: LoraBackwardPlan;
  scratch: GPUBuffer;
}

/**
 * The partials of a layer whose gradients are `ranges` (each dA and dB, in the flat layout's order), for N
 * tokens at rank r; the scratch is shared by every layer of the program with the same layout. Undefined when
 * one chunk's slice of the layer's gradients would not fit one binding (only with bindings far below WebGPU's
 * 128 MiB minimum) or the rank one tile (past 1364): the caller then takes the three GEMMs of gemm.ts.
 */
export function loraLayerPartials(prog: Program, ranges: BufferRange[], N: number, r: number, plan?: LoraBackwardPlan): LoraPartials | undefined {
  const layout = new PartialLayout(ranges);
  const chosen = plan ?? loraBackwardPlan(N, r, layout.stride, prog.gpu.maxBindingBytes);
  if (!chosen) return undefined;
  const scratch = programScratch(prog, `lora-backward.partial ${layout.key}`, chosen.chunks * layout.stride * 4);
  return { layout, plan: chosen, scratch };
}

const layout = kernelLayout({
  dy: storage(),
  t: storage(),
  B: storage(),
  x: storage(),
  dT: output(),
  partial: output(),
  p: uniform({ N: 'u32', outDim: 'u32', inDim: 'u32', span: 'u32', stride: 'u32', dAOffset: 'u32', dBOffset: 'u32', scale: 'f32' }),
});

export function loraBackwardWgsl(r: number, tile: LoraBackwardTile): string {
  if (loraBackwardTileFloats(r, tile) > WORKGROUP_FLOATS) throw new Error(`LoRA backward: a ${tile.tokens} x ${tile.outs} tile at rank ${r} exceeds the workgroup memory`);
  const TS = tile.tokens;
  const OT = tile.outs;
  const RQ = padRank(r) / 4;
  // One line per component of a rank quad (unrolled: no dynamic vector index).
  const quad = (line: (k: number, c: string) => string, sep = '\n  ') => ['x', 'y', 'z', 'w'].map((c, k) => line(k, c)).join(sep);
  return /* wgsl */ `
${layout.wgsl}

const R = ${r}u;
const RQ = ${RQ}u;
const TS = ${TS}u;
const OT = ${OT}u;
const DS = ${OT + 1}u;

// The rank runs along vec4s (RQ per row, zero past R): dy[tile rows, out tile] (row stride DS), t[tile rows],
// B[out tile rows], dT[tile rows].
var<workgroup> dyS: array<f32, ${TS * (OT + 1)}>;
var<workgroup> tS: array<vec4<f32>, ${TS * RQ}>;
var<workgroup> bS: array<vec4<f32>, ${OT * RQ}>;
var<workgroup> dTS: array<vec4<f32>, ${TS * RQ}>;

// Four rank entries j0.. of one row of a [rows, R] matrix (t, B), zero past R.
fn rankQuadT(row: u32, j0: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  ${quad((k, c) => `if (j0 + ${k}u < R) { v.${c} = t[row * R + j0 + ${k}u]; }`)}
  return v;
}

fn rankQuadB(row: u32, j0: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  ${quad((k, c) => `if (j0 + ${k}u < R) { v.${c} = B[row * R + j0 + ${k}u]; }`)}
  return v;
}

// The chunk's first token tile writes its partial, later tiles add to it (the same invocation each time).
fn storePartial(at: u32, v: f32, first: bool) {
  if (first) { partial[at] = v; } else { partial[at] = partial[at] + v; }
}

// Entries j0.. (those below R) of a rank quad at partial[at + j·jStride].
fn storeQuad(at: u32, jStride: u32, j0: u32, v: vec4<f32>, first: bool) {
  ${quad((k, c) => `if (j0 + ${k}u < R) { storePartial(at + (j0 + ${k}u) * jStride, v.${c}, first); }`)}
}

${entryWgsl(WG)} {
  let c = wid.x + wid.y * nwg.x;
  let first0 = c * p.span;
  let last = min(first0 + p.span, p.N);
  let base = c * p.stride;
  for (var t0 = first0; t0 < last; t0 += TS) {
    let nt = min(TS, last - t0);
    let first = t0 == first0;
    workgroupBarrier();
    for (var e = lid; e < TS * RQ; e += ${WG}u) {
      var v = vec4<f32>(0.0);
      if (e / RQ < nt) { v = rankQuadT(t0 + e / RQ, 4u * (e % RQ)); }
      tS[e] = v;
      dTS[e] = vec4<f32>(0.0);
    }
    for (var o0 = 0u; o0 < p.outDim; o0 += OT) {
      workgroupBarrier();
      for (var e = lid; e < TS * OT; e += ${WG}u) {
        let n = e / OT;
        let o = o0 + e % OT;
        var v = 0.0;
        if (n < nt) {
          if (o < p.outDim) { v = dy[(t0 + n) * p.outDim + o]; }
        }
        dyS[n * DS + e % OT] = v;
      }
      for (var e = lid; e < OT * RQ; e += ${WG}u) {
        var v = vec4<f32>(0.0);
        if (o0 + e / RQ < p.outDim) { v = rankQuadB(o0 + e / RQ, 4u * (e % RQ)); }
        bS[e] = v;
      }
      workgroupBarrier();
      // dB part: rows past nt are zero in dyS and tS.
      for (var e = lid; e < OT * RQ; e += ${WG}u) {
        let oo = e / RQ;
        let q = e % RQ;
        var acc = vec4<f32>(0.0);
        for (var n = 0u; n < TS; n++) { acc += dyS[n * DS + oo] * tS[n * RQ + q]; }
        if (o0 + oo < p.outDim) { storeQuad(base + p.dBOffset + (o0 + oo) * R, 1u, 4u * q, p.scale * acc, first); }
      }
      // dT, carried over the out tiles.
      for (var e = lid; e < TS * RQ; e += ${WG}u) {
        let n = e / RQ;
        var acc = dTS[e];
        for (var oo = 0u; oo < OT; oo++) { acc += dyS[n * DS + oo] * bS[oo * RQ + e % RQ]; }
        dTS[e] = acc;
      }
    }
    workgroupBarrier();
    for (var e = lid; e < TS * RQ; e += ${WG}u) {
      let n = e / RQ;
      let v = p.scale * dTS[e];
      dTS[e] = v;
      if (n < nt) {
        let j0 = 4u * (e % RQ);
        ${quad((k, c) => `if (j0 + ${k}u < R) { dT[(t0 + n) * R + j0 + ${k}u] = v.${c}; }`, '\n        ')}
      }
    }
    workgroupBarrier();
    // dA part: a rank quad per pass over the tile's x.
    for (var i = lid; i < p.inDim; i += ${WG}u) {
      for (var q = 0u; q < RQ; q++) {
        var acc = vec4<f32>(0.0);
        for (var n = 0u; n < nt; n++) { acc += dTS[n * RQ + q] * x[(t0 + n) * p.inDim + i]; }
        storeQuad(base + p.dAOffset + i, p.inDim, 4u * q, acc, first);
      }
    }
  }
}`;
}

export interface LoraBackwardArgs {
  /** [N, out]: the projection output's gradient. */
  dy: Binding;
  /** [N, r]: t = x·Aᵀ of the forward. */
  t: Binding;
  /** [out, r] f32. */
  B: Binding;
  /** [N, in]: the LoRA path's input (x, or x after dropout). */
  x: Binding;
  /** [N, r], written: s · dy · B. */
  dT: Binding;
  /** The layer's partials, and this projection's gradients among its ranges. */
  partials: LoraPartials;
  dA: BufferRange;
  dB: BufferRange;
  N: number;
  outDim: number;
  inDim: number;
  r: number;
  scale: number;
}

/** Append dT, and this projection's dA and dB partial sums per token chunk, in one dispatch. */
export function recordLoraBackward(prog: Program, a: LoraBackwardArgs, label = 'lora-backward'): void {
  if (a.N === 0) return;
  const { layout: lay, plan, scratch } = a.partials;
  const p = {
    N: a.N, outDim: a.outDim, inDim: a.inDim, span: plan.span, stride: lay.stride,
    dAOffset: lay.offsetOf(a.dA), dBOffset: lay.offsetOf(a.dB), scale: a.scale,
  };
  // dT, dB and dA: 2·N·r·(out + out + in). Reads dy, t, x and B (once per chunk); writes dT and the partials.
  const { N, r, outDim, inDim } = a;
  const cost = {
    flops: 2 * N * r * (2 * outDim + inDim),
    bytes: 4 * (N * outDim + N * r + N * inDim + plan.chunks * outDim * r + N * r + plan.chunks * r * (outDim + inDim)),
  };
  layout.dispatch(prog, label, loraBackwardWgsl(a.r, plan.tile), { dy: a.dy, t: a.t, B: a.B, x: a.x, dT: a.dT, partial: scratch, p }, plan.chunks, cost);
}

const SUM_LAYOUT = kernelLayout({
  partial: storage(),
  grads: output(),
  p: uniform({ count: 'u32', chunks: 'u32', stride: 'u32', partialOffset: 'u32', gradOffset: 'u32' }),
});

const SUM_WGSL = /* wgsl */ `
${SUM_LAYOUT.wgsl}

${entryWgsl(256)} {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= p.count) { return; }
  var s = 0.0;
  for (var c = 0u; c < p.chunks; c++) { s += partial[c * p.stride + p.partialOffset + i]; }
  grads[p.gradOffset + i] += s;
}`;

/** Append grads += Σ_c partial[c] (c = 0, 1, …) for each piece of the layer: one dispatch per flat buffer run. */
export function recordLoraGradSum(prog: Program, partials: LoraPartials, label = 'lora-grad-sum'): void {
  const { layout: lay, plan, scratch } = partials;
  lay.pieces.forEach((piece, k) => {
    const p = { count: piece.count, chunks: plan.chunks, stride: lay.stride, partialOffset: piece.partialOffset, gradOffset: piece.gradOffset };
    const cost = { flops: plan.chunks * piece.count, bytes: 4 * piece.count * (plan.chunks + 2) };
    const name = lay.pieces.length > 1 ? `${label}[${k}]` : label;
    SUM_LAYOUT.dispatch(prog, name, SUM_WGSL, { partial: scratch, grads: piece.buffer, p }, Math.ceil(piece.count / 256), cost);
  });
}

/** Plain-TS reference of recordLoraBackward: dT [N, r], and per chunk dB [out, r] and dA [r, in]. */
export function loraBackwardRef(
  a: { dy: Float32Array; t: Float32Array; B: Float32Array; x: Float32Array; N: number; outDim: number; inDim: number; r: number; scale: number },
  plan: LoraBackwardPlan,
): { dT: Float32Array; dB: Float32Array[]; dA: Float32Array[] } {
  const { dy, t, B, x, N, outDim, inDim, r, scale } = a;
  const TS = plan.tile.tokens;
  const OT = plan.tile.outs;
  const dT = new Float32Array(N * r);
  const dBs: Float32Array[] = [];
  const dAs: Float32Array[] = [];
  for (let c = 0; c < plan.chunks; c++) {
    const dB = new Float32Array(outDim * r);
    const dA = new Float32Array(r * inDim);
    const last = Math.min((c + 1) * plan.span, N);
    for (let t0 = c * plan.span; t0 < last; t0 += TS) {
      const nt = Math.min(TS, last - t0);
      const tileDT = new Float32Array(nt * r);
      for (let o0 = 0; o0 < outDim; o0 += OT) {
        for (let o = o0; o < Math.min(o0 + OT, outDim); o++) {
          for (let j = 0; j < r; j++) {
            let acc = 0;
            for (let n = 0; n < nt; n++) acc = Math.fround(acc + Math.fround(dy[(t0 + n) * outDim + o]! * t[(t0 + n) * r + j]!));
            dB[o * r + j] = Math.fround(dB[o * r + j]! + Math.fround(scale * acc));
          }
        }
        for (let n = 0; n < nt; n++) {
          for (let j = 0; j < r; j++) {
            let acc = tileDT[n * r + j]!;
            for (let o = o0; o < Math.min(o0 + OT, outDim); o++) acc = Math.fround(acc + Math.fround(dy[(t0 + n) * outDim + o]! * B[o * r + j]!));
            tileDT[n * r + j] = acc;
          }
        }
      }
      for (let e = 0; e < nt * r; e++) dT[t0 * r + e] = tileDT[e] = Math.fround(scale * tileDT[e]!);
      for (let i = 0; i < inDim; i++) {
        for (let j = 0; j < r; j++) {
          let acc = 0;
          for (let n = 0; n < nt; n++) acc = Math.fround(acc + Math.fround(tileDT[n * r + j]! * x[(t0 + n) * inDim + i]!));
          dA[j * inDim + i] = Math.fround(dA[j * inDim + i]! + acc);
        }
      }
    }
    dBs.push(dB);
    dAs.push(dA);
  }
  return { dT, dB: dBs, dA: dAs };
}

/** Plain-TS reference of one piece's sum: grads[gradOffset + i] + Σ_c partial[c·stride + partialOffset + i]. */
export function loraGradSumRef(partial: Float32Array, chunks: number, stride: number, piece: Omit<PartialPiece, 'buffer'>, grads: Float32Array): Float32Array {
  const out = grads.slice();
  for (let i = 0; i < piece.count; i++) {
    let s = 0;
    for (let c = 0; c < chunks; c++) s = Math.fround(s + partial[c * stride + piece.partialOffset + i]!);
    out[piece.gradOffset + i] = Math.fround(out[piece.gradOffset + i]! + s);
  }
  return out;
}
