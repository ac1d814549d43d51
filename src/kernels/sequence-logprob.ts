// Per-sequence sums of token log-probabilities, fused with the lm_head over vocabulary chunks (the preference
// stages' quantity: DPO, ORPO, SimPO and KTO compare sums or means of log π(y|x) per sequence).
//
// Token n belongs to sequence seqOf[n] and counts when 0 <= targets[n] < V and seqOf[n] < S:
//   lse[n]     = log Σ_j exp(logits[n, j])                  (the same chunked online fold as cross-entropy)
//   logp[n]    = logits[n, targets[n]] − lse[n]               (0 when not counted)
//   sums[s]    = Σ_{n: seqOf[n] = s} logp[n],  counts[s] = number of counted tokens of s
// Backward, given dSeq[s] = dLoss/dsums[s] from the stage:
//   dlogits[n, j] = dSeq[seqOf[n]] · (onehot(targets[n])_j − softmax(logits[n])_j)
//   dh[n]         = Σ_j dlogits[n, j] · W[j]                 (per chunk, recomputing the chunk's logits)
// Sums are tree reductions in a fixed order per sequence, so replays give the same bits.
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { GpuMatrix } from '../gpu/matrix.js';
import type { Binding, Program } from '../gpu/program.js';
import { logitsGradWgsl, logSoftmaxRow, recordVocabBackward, recordVocabFold, workgroupTreeSumWgsl, type VocabPass } from './cross-entropy.js';
import { matmulInputGradRef } from './matmul-input-grad.js';
import { matmulRef } from './matmul.js';

const WG = 256;

const tokenLayout = kernelLayout({
  rowMax: storage(), rowSum: storage(), rowTarget: storage(), targets: storage('array<i32>'), seqOf: storage('array<u32>'),
  lse: output(), logp: output(), p: uniform({ rows: 'u32', vocab: 'u32', sequences: 'u32' }),
});

/** Per row: lse, and the counted target log-prob (0 otherwise). */
export const sequenceTokenLogprobWgsl = /* wgsl */ `
${tokenLayout.wgsl}
${entryWgsl(WG)} {
  let n = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (n >= p.rows) { return; }
  let l = rowMax[n] + log(rowSum[n]);
  lse[n] = l;
  let t = targets[n];
  var v = 0.0;
  if (t >= 0 && u32(t) < p.vocab && seqOf[n] < p.sequences) { v = rowTarget[n] - l; }
  logp[n] = v;
}`;

const sumLayout = kernelLayout({
  logp: storage(), targets: storage('array<i32>'), seqOf: storage('array<u32>'), sums: output(), counts: output(),
  p: uniform({ rows: 'u32', vocab: 'u32' }),
});

/** One workgroup per sequence: sums[s] and counts[s] over the rows with seqOf = s, as fixed-order tree sums. */
export const sequenceSumWgsl = /* wgsl */ `
${sumLayout.wgsl}
var<workgroup> partSum: array<f32, ${WG}>;
var<workgroup> partCount: array<f32, ${WG}>;

${entryWgsl(WG)} {
  let s = wid.x;
  var acc = 0.0;
  var cnt = 0.0;
  for (var n = lid; n < p.rows; n += ${WG}u) {
    let t = targets[n];
    if (seqOf[n] == s && t >= 0 && u32(t) < p.vocab) { acc += logp[n]; cnt += 1.0; }
  }
  partSum[lid] = acc;
  partCount[lid] = cnt;
  ${workgroupTreeSumWgsl(['partSum', 'partCount'])}
  if (lid == 0u) {
    sums[s] = partSum[0];
    counts[s] = partCount[0];
  }
}`;

const gradLayout = kernelLayout({
  logits: output(), targets: storage('array<i32>'), seqOf: storage('array<u32>'), lse: storage(), dSeq: storage(),
  p: uniform({ rows: 'u32', width: 'u32', start: 'u32', vocab: 'u32', sequences: 'u32' }),
});

/** In place: a logits chunk [rows, width] becomes dSeq[seqOf[row]] · (onehot − softmax), 0 on uncounted rows. */
export const sequenceLogprobGradWgsl = logitsGradWgsl(gradLayout.wgsl, 't >= 0 && u32(t) < p.vocab && seqOf[row] < p.sequences', '-dSeq[seqOf[row]]');

export interface SequenceLogprobArgs {
  /** f32 [N, H], after the final norm. */
  hidden: Binding;
  /** [V, H] (tied models pass the embedding). */
  lmHead: GpuMatrix;
  /** i32 [N], already shifted; −100 (or any id outside [0, V)) is not counted. */
  targets: Binding;
  /** u32 [N]: the sequence of each token; ids >= `sequences` are not counted. */
  seqOf: Binding;
  N: number;
  /** S: the number of sequences. */
  sequences: number;
  /** f32 [S], written (=): the sum of counted token log-probs of each sequence. */
  sums: Binding;
  /** f32 [S], written (=): the number of counted tokens of each sequence (for means). */
  counts: Binding;
  /** Vocab rows per chunk; by default as cross-entropy sizes it. */
  chunk?: number;
  /** The chunk scratch of another pass to reuse (programs that never run interleaved); by default its own. */
  logits?: GPUBuffer;
}

/** A recorded forward, for its backward. */
export interface SequenceLogprobForward {
  pass: VocabPass;
  seqOf: Binding;
  sequences: number;
  /** f32 [N]: log-sum-exp per row. */
  lse: GPUBuffer;
  /** f32 [N]: each counted token's log-prob, 0 elsewhere. */
  logp: GPUBuffer;
}

export function recordSequenceLogprobForward(prog: Program, a: SequenceLogprobArgs, label = 'sequence-logprob'): SequenceLogprobForward {
  const gpu = prog.gpu;
  const S = a.sequences;
  if (!(S >= 1)) throw new Error(`sequence log-probs need at least one sequence, got ${S}`);
  const pass = recordVocabFold(prog, a, label);
  const lse = gpu.storage(a.N * 4, `${pass.label}.lse`);
  const logp = gpu.storage(a.N * 4, `${pass.label}.logp`);
  tokenLayout.dispatch(prog, `${pass.label}.token`, sequenceTokenLogprobWgsl, {
    rowMax: pass.rowMax, rowSum: pass.rowSum, rowTarget: pass.rowTarget, targets: a.targets, seqOf: a.seqOf, lse, logp,
    p: { rows: a.N, vocab: pass.V, sequences: S },
  }, Math.ceil(a.N / WG), { flops: 4 * a.N, bytes: 4 * 7 * a.N });
  sumLayout.dispatch(prog, `${pass.label}.sums`, sequenceSumWgsl, {
    logp, targets: a.targets, seqOf: a.seqOf, sums: a.sums, counts: a.counts, p: { rows: a.N, vocab: pass.V },
  }, [S, 1, 1], { flops: 2 * a.N, bytes: 4 * (3 * a.N + 2 * S) });
  return { pass, seqOf: a.seqOf, sequences: S, lse, logp };
}

/** Record the backward of a recorded forward: dHidden (=) Σ_s dSeq[s] · dsums[s]/dh. Must follow its own forward. */
export function recordSequenceLogprobBackward(prog: Program, f: SequenceLogprobForward, dSeq: Binding, dHidden: Binding): void {
  const { pass } = f;
  recordVocabBackward(prog, pass, dHidden, (c) => {
    gradLayout.dispatch(prog, `${pass.label}.grad[${c.start}]`, sequenceLogprobGradWgsl, {
      logits: c.view, targets: pass.targets, seqOf: f.seqOf, lse: f.lse, dSeq,
      p: { rows: pass.N, width: c.width, start: c.start, vocab: pass.V, sequences: f.sequences },
    }, Math.ceil((pass.N * c.width) / WG), { flops: 4 * pass.N * c.width, bytes: 4 * (2 * pass.N * c.width + 3 * pass.N) });
  });
}

function counted(t: number, s: number, V: number, S: number): boolean {
  return t >= 0 && t < V && s < S;
}

/**
 * Plain-TS reference (f64): sums[s] = Σ counted log-softmax(logits[n])[targets[n]] over seqOf[n] = s, counts[s],
 * and dLogits = dSeq[seqOf[n]] · (onehot − softmax) when dSeq is given.
 */
export function sequenceLogprobRef(
  logits: Float32Array,
  targets: Int32Array,
  seqOf: Uint32Array,
  N: number,
  V: number,
  S: number,
  dSeq?: ArrayLike<number>,
): { sums: Float64Array; counts: Float64Array; dLogits: Float32Array } {
  const sums = new Float64Array(S);
  const counts = new Float64Array(S);
  const dLogits = new Float32Array(N * V);
  for (let n = 0; n < N; n++) {
    const t = targets[n]!;
    const s = seqOf[n]!;
    if (!counted(t, s, V, S)) continue;
    const logSoftmax = logSoftmaxRow(logits.subarray(n * V, (n + 1) * V));
    sums[s]! += logSoftmax[t]!;
    counts[s]! += 1;
    if (!dSeq) continue;
    for (let j = 0; j < V; j++) dLogits[n * V + j] = (Math.exp(logSoftmax[j]!) - (j === t ? 1 : 0)) * -dSeq[s]!;
  }
  return { sums, counts, dLogits };
}

/** Reference of the whole fused op from hidden states and an f32 lm head [V, H]: sums, counts and dLoss/dh. */
export function sequenceLogprobHiddenRef(
  hidden: Float32Array,
  lmHead: Float32Array,
  targets: Int32Array,
  seqOf: Uint32Array,
  N: number,
  V: number,
  H: number,
  S: number,
  dSeq?: ArrayLike<number>,
): { sums: Float64Array; counts: Float64Array; dHidden: Float32Array } {
  const logits = matmulRef(hidden, lmHead, N, V, H);
  const { sums, counts, dLogits } = sequenceLogprobRef(logits, targets, seqOf, N, V, S, dSeq);
  return { sums, counts, dHidden: matmulInputGradRef(dLogits, lmHead, N, V, H) };
}
