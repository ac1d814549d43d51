// Token cross-entropy fused with the lm_head matmul, over vocabulary chunks: the [N, V] logits never exist at
// once (8192 x 151936 f32 would be 5 GiB). Forward: per chunk, logits = h · W[c0:c1]ᵀ, then fold the chunk into
// per-row running max and sum-exp (online softmax) and pick up the target logit; then lse, per-row losses and
// one deterministic reduction. Backward: per chunk again, recompute logits, turn them in place into
// (softmax − onehot) · invCount and accumulate dh += dlogits · W[c0:c1].
// A row counts when 0 <= target < V (−100 marks positions without a label).
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { GpuMatrix } from '../gpu/matrix.js';
import type { Binding, Program } from '../gpu/program.js';
import { matmulInputGradRef, recordMatmulInputGrad } from './matmul-input-grad.js';
import { matmulRef, recordMatmul } from './matmul.js';

const WG = 256;
/** Bytes one logits chunk may take unless the caller allows more (the scratch that replaces the full logits matrix). */
export const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;

const foldLayout = kernelLayout({
  logits: storage(),
  targets: storage('array<i32>'),
  rowMax: output(),
  rowSum: output(),
  rowTarget: output(),
  p: uniform({ rows: 'u32', width: 'u32', start: 'u32', first: 'u32' }),
});

/** Fold one chunk [rows, width] (vocab columns start..start+width) into the running row max and sum-exp. */
export const crossEntropyFoldWgsl = /* wgsl */ `
${foldLayout.wgsl}
var<workgroup> partMax: array<f32, ${WG}>;
var<workgroup> partSum: array<f32, ${WG}>;
// Finite "minus infinity": exp(LOWEST - x) is 0 and LOWEST - LOWEST is 0, so empty partials combine cleanly.
const LOWEST = -3.4028234e38;

${entryWgsl(WG)} {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.width;
  var m = LOWEST;
  var s = 0.0;
  for (var j = lid; j < p.width; j += ${WG}u) {
    let v = logits[base + j];
    if (v > m) { s = s * exp(m - v) + 1.0; m = v; } else { s += exp(v - m); }
  }
  partMax[lid] = m;
  partSum[lid] = s;
  workgroupBarrier();
  for (var half = ${WG / 2}u; half > 0u; half >>= 1u) {
    if (lid < half) {
      let m1 = partMax[lid];
      let m2 = partMax[lid + half];
      let mm = max(m1, m2);
      partSum[lid] = partSum[lid] * exp(m1 - mm) + partSum[lid + half] * exp(m2 - mm);
      partMax[lid] = mm;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    var mx = partMax[0];
    var sum = partSum[0];
    if (p.first == 0u) {
      let prev = rowMax[row];
      let mm = max(prev, mx);
      sum = rowSum[row] * exp(prev - mm) + sum * exp(mx - mm);
      mx = mm;
    }
    rowMax[row] = mx;
    rowSum[row] = sum;
    let t = targets[row];
    if (t >= i32(p.start) && t < i32(p.start + p.width)) { rowTarget[row] = logits[base + u32(t) - p.start]; }
  }
}`;

/**
 * WGSL summing the workgroup arrays `names` (WG long) into their element 0, pairwise in a fixed order, so a
 * replay gives the same bits (the loss here, the per-sequence sums in sequence-logprob.ts).
 */
export function workgroupTreeSumWgsl(names: string[]): string {
  return `workgroupBarrier();
  for (var half = ${WG / 2}u; half > 0u; half >>= 1u) {
    if (lid < half) {
      ${names.map((n) => `${n}[lid] += ${n}[lid + half];`).join('\n      ')}
    }
    workgroupBarrier();
  }`;
}

/**
 * WGSL turning a logits chunk [rows, width] (vocab columns start..start+width) in place into
 * scale · (softmax − onehot(target)) on the rows where `counted` holds, 0 elsewhere: the gradient of −log p(target)
 * scaled. `counted` and `scale` are WGSL expressions of `row` and `t` (the row's target); `layoutWgsl` binds
 * logits, targets and lse and a uniform p with rows, width, start and vocab.
 */
export function logitsGradWgsl(layoutWgsl: string, counted: string, scale: string): string {
  return /* wgsl */ `
${layoutWgsl}

${entryWgsl(WG)} {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= p.rows * p.width) { return; }
  let row = i / p.width;
  let t = targets[row];
  var g = 0.0;
  if (${counted}) {
    g = exp(logits[i] - lse[row]);
    if (u32(t) == p.start + (i - row * p.width)) { g -= 1.0; }
    g *= ${scale};
  }
  logits[i] = g;
}`;
}

const lossLayout = kernelLayout({
  rowMax: storage(),
  rowSum: storage(),
  rowTarget: storage(),
  targets: storage('array<i32>'),
  invCount: storage(),
  lse: output(),
  loss: output(),
  p: uniform({ rows: 'u32', vocab: 'u32' }),
});

/** One workgroup: lse per row, and loss = Σ counted (lse − target logit) · invCount as a fixed-order tree sum. */
export const crossEntropyLossWgsl = /* wgsl */ `
${lossLayout.wgsl}
var<workgroup> partial: array<f32, ${WG}>;

${entryWgsl(WG)} {
  var acc = 0.0;
  for (var r = lid; r < p.rows; r += ${WG}u) {
    let l = rowMax[r] + log(rowSum[r]);
    lse[r] = l;
    let t = targets[r];
    if (t >= 0 && u32(t) < p.vocab) { acc += l - rowTarget[r]; }
  }
  partial[lid] = acc;
  ${workgroupTreeSumWgsl(['partial'])}
  if (lid == 0u) { loss[0] = partial[0] * invCount[0]; }
}`;

const gradLayout = kernelLayout({
  logits: output(),
  targets: storage('array<i32>'),
  lse: storage(),
  invCount: storage(),
  p: uniform({ rows: 'u32', width: 'u32', start: 'u32', vocab: 'u32' }),
});

/** In place: a logits chunk [rows, width] becomes dLoss/dlogits = (softmax − onehot) · invCount, 0 on uncounted rows. */
export const crossEntropyGradWgsl = logitsGradWgsl(gradLayout.wgsl, 't >= 0 && u32(t) < p.vocab', 'invCount[0]');

export interface CrossEntropyArgs {
  /** f32 [N, H], after the final norm. */
  hidden: Binding;
  /** [V, H] (tied models pass the embedding). */
  lmHead: GpuMatrix;
  /** i32 [N], already shifted; rows with a target outside [0, V) (−100) are not counted. */
  targets: Binding;
  N: number;
  /** f32[1] storage buffer: 1 / number of counted tokens (0 when there are none), written by the caller each step. */
  invCount: Binding;
  /** f32[1], written (=) with the loss. */
  loss: Binding;
  /** f32 [N, H]: if given, the backward is recorded too and dHidden is written (=) with dLoss/dh. */
  dHidden?: Binding;
  /** Vocab rows per chunk; by default as many as keep the chunk within `chunkBytes` and one binding. */
  chunk?: number;
  /** Bytes the logits chunk may take (default 64 MiB): with room for all of [N, V], one chunk and no recompute. */
  chunkBytes?: number;
}

export function defaultChunk(maxBindingBytes: number, N: number, V: number, chunkBytes = DEFAULT_CHUNK_BYTES): number {
  const rows = Math.floor(Math.min(chunkBytes, maxBindingBytes) / (N * 4));
  if (rows < 1) throw new Error(`cross-entropy: one vocab column for ${N} tokens does not fit a ${maxBindingBytes}-byte binding`);
  // Whole tiles of 64 columns when there is room, so matmul tiles are not cut by chunk edges.
  return Math.min(V, rows >= 64 ? rows - (rows % 64) : rows);
}

/** What every loss over vocabulary chunks shares: the chunk scratch, the row statistics and the chunk list. */
export interface VocabPass {
  N: number;
  V: number;
  hidden: Binding;
  lmHead: GpuMatrix;
  targets: Binding;
  label: string;
  chunks: { start: number; width: number; view: Binding }[];
  /** f32 [N, chunk]: the chunk scratch every chunk's view lies in. */
  logits: GPUBuffer;
  /** f32 [N]: running max, sum-exp and target logit of each row after the fold. */
  rowMax: GPUBuffer;
  rowSum: GPUBuffer;
  rowTarget: GPUBuffer;
}

/**
 * Record the forward half shared by the vocabulary-chunked losses: per chunk, logits = h · W[c0:c1]ᵀ, folded into
 * the per-row max, sum-exp and target logit. Allocates the row statistics, and the chunk scratch unless given.
 */
export function recordVocabFold(
  prog: Program,
  a: { hidden: Binding; lmHead: GpuMatrix; targets: Binding; N: number; chunk?: number; chunkBytes?: number; logits?: GPUBuffer },
  label: string,
): VocabPass {
  const gpu = prog.gpu;
  const { N, lmHead } = a;
  const V = lmHead.rows;
  const chunk = Math.min(V, a.chunk ?? defaultChunk(gpu.maxBindingBytes, N, V, a.chunkBytes));
  if (!(chunk >= 1) || N * chunk * 4 > gpu.maxBindingBytes) {
    throw new Error(`${label}: chunk of ${chunk} vocab rows for ${N} tokens does not fit a ${gpu.maxBindingBytes}-byte binding`);
  }
  // A given scratch (another pass's, whose programs never run interleaved with this one's) saves the allocation.
  if (a.logits && a.logits.size < N * chunk * 4) throw new Error(`${label}: the given logits scratch holds ${a.logits.size} bytes, the chunk needs ${N * chunk * 4}`);
  const logits = a.logits ?? gpu.storage(N * chunk * 4, `${label}.logits-chunk`);
  const pass: VocabPass = {
    N, V, hidden: a.hidden, lmHead, targets: a.targets, label, chunks: [], logits,
    rowMax: gpu.storage(N * 4, `${label}.row-max`),
    rowSum: gpu.storage(N * 4, `${label}.row-sum`),
    rowTarget: gpu.storage(N * 4, `${label}.row-target`),
  };
  for (let start = 0; start < V; start += chunk) {
    const width = Math.min(chunk, V - start);
    pass.chunks.push({ start, width, view: { buffer: logits, offset: 0, size: N * width * 4 } });
  }
  pass.chunks.forEach((c, i) => {
    recordChunkLogits(prog, pass, c);
    const p = { rows: N, width: c.width, start: c.start, first: i === 0 ? 1 : 0 };
    const bindings = { logits: c.view, targets: a.targets, rowMax: pass.rowMax, rowSum: pass.rowSum, rowTarget: pass.rowTarget, p };
    // Per logit: compare, subtract, exp, add; the chunk read, three row statistics read and written.
    foldLayout.dispatch(prog, `${label}.fold[${c.start}]`, crossEntropyFoldWgsl, bindings, N, { flops: 4 * N * c.width, bytes: 4 * (N * c.width + 7 * N) });
  });
  return pass;
}

function recordChunkLogits(prog: Program, pass: VocabPass, c: VocabPass['chunks'][number]): void {
  recordMatmul(prog, { x: pass.hidden, w: pass.lmHead, y: c.view, M: pass.N, rowRange: [c.start, c.start + c.width] }, `${pass.label}.logits`);
}

/**
 * Record the backward half: per chunk, the logits again (kept from the forward when there is one chunk, so the
 * backward must follow its own forward), `recordGrad` turns them in place into dLoss/dlogits, and
 * dHidden (=, then +=) dlogits · W[c0:c1].
 */
export function recordVocabBackward(
  prog: Program,
  pass: VocabPass,
  dHidden: Binding,
  recordGrad: (c: VocabPass['chunks'][number]) => void,
): void {
  pass.chunks.forEach((c, i) => {
    if (pass.chunks.length > 1) recordChunkLogits(prog, pass, c);
    recordGrad(c);
    recordMatmulInputGrad(prog, {
      dy: c.view, w: pass.lmHead, dx: dHidden, M: pass.N, accumulate: i > 0, rowRange: [c.start, c.start + c.width],
    }, `${pass.label}.dhidden`);
  });
}

/** The forward of the token cross-entropy: its vocabulary pass and the per-row log-sum-exp f32[N]. */
export interface CrossEntropyForward {
  pass: VocabPass;
  lse: GPUBuffer;
  invCount: Binding;
}

/** Record the fused lm_head + cross-entropy forward: loss (=) and lse. */
export function recordCrossEntropyForward(prog: Program, a: Omit<CrossEntropyArgs, 'dHidden'>, label = 'cross-entropy'): CrossEntropyForward {
  const gpu = prog.gpu;
  const pass = recordVocabFold(prog, a, label);
  const lse = gpu.storage(a.N * 4, `${pass.label}.lse`);
  const bindings = { rowMax: pass.rowMax, rowSum: pass.rowSum, rowTarget: pass.rowTarget, targets: a.targets, invCount: a.invCount, lse, loss: a.loss, p: { rows: a.N, vocab: pass.V } };
  lossLayout.dispatch(prog, `${pass.label}.loss`, crossEntropyLossWgsl, bindings, 1, { flops: 4 * a.N, bytes: 4 * (5 * a.N + 2) });
  return { pass, lse, invCount: a.invCount };
}

/** Record the backward of a recorded forward: dHidden (=) dLoss/dh. */
export function recordCrossEntropyBackward(prog: Program, f: CrossEntropyForward, dHidden: Binding): void {
  const { pass } = f;
  recordVocabBackward(prog, pass, dHidden, (c) => {
    const p = { rows: pass.N, width: c.width, start: c.start, vocab: pass.V };
    const bindings = { logits: c.view, targets: pass.targets, lse: f.lse, invCount: f.invCount, p };
    // Per logit: subtract, exp, the one-hot and the scale; the chunk read and written in place.
    const cost = { flops: 4 * pass.N * c.width, bytes: 4 * (2 * pass.N * c.width + 2 * pass.N) };
    gradLayout.dispatch(prog, `${pass.label}.grad[${c.start}]`, crossEntropyGradWgsl, bindings, Math.ceil((pass.N * c.width) / WG), cost);
  });
}

/**
 * Record the fused lm_head + cross-entropy forward (and backward when `dHidden` is given).
 * Returns the per-row log-sum-exp buffer f32[N] (kept for the backward and for inspection).
 */
export function recordCrossEntropy(prog: Program, a: CrossEntropyArgs, label = 'cross-entropy'): { lse: GPUBuffer } {
  const f = recordCrossEntropyForward(prog, a, label);
  if (a.dHidden) recordCrossEntropyBackward(prog, f, a.dHidden);
  return { lse: f.lse };
}

/** Full logits [N, V] = h · Wᵀ: only for small vocabularies (parity checks, generating one position at a time). */
export function recordLogits(prog: Program, a: { hidden: Binding; lmHead: GpuMatrix; logits: Binding; N: number }, label = 'logits'): void {
  recordMatmul(prog, { x: a.hidden, w: a.lmHead, y: a.logits, M: a.N }, label);
}

/** Log-softmax of one row in f64 (the references of both vocabulary losses). */
export function logSoftmaxRow(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - lse);
}

/**
 * Plain-TS reference (f64 accumulation): loss = Σ counted (lse − logit[target]) · invCount and
 * dLogits = (softmax − onehot) · invCount. invCount defaults to 1 / counted rows (0 when none).
 */
export function crossEntropyRef(
  logits: Float32Array,
  targets: Int32Array,
  N: number,
  V: number,
  invCount?: number,
): { loss: number; dLogits: Float32Array } {
  let counted = 0;
  for (let n = 0; n < N; n++) if (targets[n]! >= 0 && targets[n]! < V) counted++;
  const scale = invCount ?? (counted ? 1 / counted : 0);
  const dLogits = new Float32Array(N * V);
  let total = 0;
  for (let n = 0; n < N; n++) {
    const t = targets[n]!;
    if (!(t >= 0 && t < V)) continue;
    const logSoftmax = logSoftmaxRow(logits.subarray(n * V, (n + 1) * V));
    total -= logSoftmax[t]!;
    for (let j = 0; j < V; j++) dLogits[n * V + j] = (Math.exp(logSoftmax[j]!) - (j === t ? 1 : 0)) * scale;
  }
  return { loss: total * scale, dLogits };
}

/** Reference of the whole fused op from hidden states and an f32 lm head [V, H]: loss and dLoss/dh. */
export function crossEntropyHiddenRef(
  hidden: Float32Array,
  lmHead: Float32Array,
  targets: Int32Array,
  N: number,
  V: number,
  H: number,
  invCount?: number,
): { loss: number; dHidden: Float32Array } {
  const logits = matmulRef(hidden, lmHead, N, V, H);
  const { loss, dLogits } = crossEntropyRef(logits, targets, N, V, invCount);
  return { loss, dHidden: matmulInputGradRef(dLogits, lmHead, N, V, H) };
}
