// Token cross-entropy fused with the lm_head matmul, over vocabulary chunks: the [N, V] logits never exist at
// once (8192 x 151936 f32 would be 5 GiB). Per row n, with z = h · Wᵀ, target y and weight w = invCount when the
// row counts (0 <= y < V; −100 marks positions without a label), 0 otherwise:
//   loss = Σ_n w · (lse_n − z_{n,y}),   lse = m + log S,   S = Σ_j exp(z_j − m),  m = max_j z_j
//   dh_n = w · (Σ_j softmax(z)_j · W_j − W_y) = w · (G_n / S_n − W_{y_n}),   G = Σ_j exp(z_j − m) · W_j
// Forward only (evaluation): per chunk c, z_c = h · W_cᵀ, folded into the per-row running max and sum-exp
// (online softmax) with the target logit picked up; then lse, the loss and one deterministic reduction.
// Training, one pass (no lm_head recompute: 2 lm_head products instead of 3): the running max m, sum S and the
// gradient sum G [N, H] are carried chunk by chunk, each rescaled when the max moves:
//   m' = max(m, max_j z_cj),  α = exp(m − m'),  P_c = exp(z_c − m') (in place of z_c),
//   S ← α·S + Σ_j P_cj,  G ← α·G (in the fold kernel, one row per workgroup),  G += P_c · W_c (the input-grad matmul)
// (the first chunk starts from S = 0 and writes G instead of scaling it); the backward is one elementwise finish
// dh = w · (G / S − W_y). 3 dispatches per chunk, so the chunk is sized for memory: see ONE_PASS_CHUNK_BYTES.
import type { Gpu } from '../gpu/device.js';
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { matrixRowBytes, wgslWeightArray, wgslWeightLoad, type GpuMatrix, type MatrixDType } from '../gpu/matrix.js';
import type { Binding, Program } from '../gpu/program.js';
import { matmulInputGradRef, recordMatmulInputGrad } from './matmul-input-grad.js';
import { matmulRef, recordMatmul } from './matmul.js';

const WG = 256;
/** Bytes one logits chunk may take unless the caller allows more (the scratch that replaces the full logits matrix). */
const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;
/**
 * The training (one-pass) chunk: each chunk costs 3 dispatches and the FLOPs do not depend on its size, so it is
 * sized for memory. 128 MiB keeps the scratch small (0.6B, 1 x 2048 tokens: 16384 vocab rows a chunk, 10 chunks,
 * +134 MB of peak) and each chunk's products large enough to fill a GPU ([2048, 16384] logits).
 */
export const ONE_PASS_CHUNK_BYTES = 128 * 1024 * 1024;
// Finite "minus infinity": exp(LOWEST - x) is 0 and LOWEST - LOWEST is 0, so empty partials combine cleanly.
const LOWEST = -3.4028234e38;

/** WGSL of a fold kernel, one workgroup per row of the chunk [p.rows, p.width]: `row`, `base` (its first logit), then `body`. */
function rowFoldWgsl(layoutWgsl: string, body: string): string {
  return /* wgsl */ `
${layoutWgsl}
var<workgroup> partMax: array<f32, ${WG}>;
var<workgroup> partSum: array<f32, ${WG}>;
const LOWEST = ${LOWEST};

${entryWgsl(WG)} {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.width;
${body}
}`;
}

const foldLayout = kernelLayout({
  logits: storage(),
  targets: storage('array<i32>'),
  rowMax: output(),
  rowSum: output(),
  rowTarget: output(),
  p: uniform({ rows: 'u32', width: 'u32', start: 'u32', first: 'u32' }),
});

/** Fold one chunk [rows, width] (vocab columns start..start+width) into the running row max and sum-exp. */
export const crossEntropyFoldWgsl = rowFoldWgsl(foldLayout.wgsl, /* wgsl */ `
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
  }`);

const onePassFoldLayout = kernelLayout({
  logits: output(),
  targets: storage('array<i32>'),
  rowMax: output(),
  rowSum: output(),
  rowTarget: output(),
  gradSum: output(),
  p: uniform({ rows: 'u32', width: 'u32', start: 'u32', first: 'u32', hidden: 'u32' }),
});

/**
 * The one-pass fold of chunk [rows, width] (vocab columns start..start+width), one workgroup per row: the new
 * running max m' = max(m, chunk max), the chunk in place P = exp(z − m'), S = α·S + Σ P and G[row] ← α·G[row]
 * with α = exp(m − m'); the first chunk (p.first) starts from S = 0 and leaves G to the matmul that writes it.
 */
export const crossEntropyOnePassFoldWgsl = rowFoldWgsl(onePassFoldLayout.wgsl, /* wgsl */ `
  var cm = LOWEST;
  for (var j = lid; j < p.width; j += ${WG}u) { cm = max(cm, logits[base + j]); }
  partMax[lid] = cm;
  workgroupBarrier();
  for (var half = ${WG / 2}u; half > 0u; half >>= 1u) {
    if (lid < half) { partMax[lid] = max(partMax[lid], partMax[lid + half]); }
    workgroupBarrier();
  }
  var m = LOWEST;
  var sum = 0.0;
  if (p.first == 0u) { m = rowMax[row]; sum = rowSum[row]; }
  let mx = max(m, partMax[0]);
  var alpha = 1.0;
  if (p.first == 0u) { alpha = exp(m - mx); }
  // The target logit is read by the invocation that owns its column, before that column becomes P.
  let t = u32(targets[row]);
  var s = 0.0;
  for (var j = lid; j < p.width; j += ${WG}u) {
    let v = logits[base + j];
    if (t == p.start + j) { rowTarget[row] = v; }
    let e = exp(v - mx);
    logits[base + j] = e;
    s += e;
  }
  partSum[lid] = s;
  ${workgroupTreeSumWgsl(['partSum'])}
  if (p.first == 0u) {
    let g = row * p.hidden;
    for (var k = lid; k < p.hidden; k += ${WG}u) { gradSum[g + k] *= alpha; }
  }
  if (lid == 0u) {
    rowMax[row] = mx;
    rowSum[row] = alpha * sum + partSum[0];
  }`);

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

function finishLayout(dtype: MatrixDType) {
  return kernelLayout({
    gradSum: storage(),
    rowSum: storage(),
    targets: storage('array<i32>'),
    invCount: storage(),
    lmHead: storage(wgslWeightArray(dtype)),
    dHidden: output(),
    p: uniform({ rows: 'u32', hidden: 'u32', vocab: 'u32', partStart: 'u32', partRows: 'u32', first: 'u32' }),
  });
}

/**
 * The one-pass backward, per element of dHidden [rows, hidden], one dispatch per lm_head part:
 * dh = w · (G / S − W[y]) with w = invCount on counted rows, 0 elsewhere. The first part writes w · G / S and
 * subtracts w · W[y] where y lies in its rows; later parts subtract theirs.
 */
export function crossEntropyFinishWgsl(dtype: MatrixDType): string {
  return /* wgsl */ `
${finishLayout(dtype).wgsl}
${wgslWeightLoad(dtype, 'headAt', 'lmHead')}

${entryWgsl(WG)} {
  let i = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (i >= p.rows * p.hidden) { return; }
  let row = i / p.hidden;
  // A target below 0 (−100) wraps to a huge u32: neither counted nor in any part.
  let t = u32(targets[row]);
  let partRow = t - p.partStart;
  var d = 0.0;
  if (p.first != 0u) { d = gradSum[i] / rowSum[row]; }
  if (partRow < p.partRows) { d -= headAt(partRow * p.hidden + (i - row * p.hidden)); }
  var w = 0.0;
  if (t < p.vocab) { w = invCount[0]; }
  if (p.first != 0u) { dHidden[i] = w * d; } else if (partRow < p.partRows) { dHidden[i] += w * d; }
}`;
}

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
  /** f32 [N, H]: if given, the backward is recorded too (the one-pass form) and dHidden is written (=) with dLoss/dh. */
  dHidden?: Binding;
  /** Vocab rows per chunk; by default as many as keep the chunk within `chunkBytes` and one binding. */
  chunk?: number;
  /** Bytes the logits chunk may take: by default 64 MiB forward only, ONE_PASS_CHUNK_BYTES in the one-pass form. */
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

/** The chunk scratch (unless given), the row statistics and the chunk list of a pass; records nothing. */
function vocabPass(
  gpu: Gpu,
  a: { hidden: Binding; lmHead: GpuMatrix; targets: Binding; N: number; chunk?: number; chunkBytes?: number; logits?: GPUBuffer },
  label: string,
): VocabPass {
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
  return pass;
}

/**
 * Record the forward half shared by the vocabulary-chunked losses: per chunk, logits = h · W[c0:c1]ᵀ, folded into
 * the per-row max, sum-exp and target logit. Allocates the row statistics, and the chunk scratch unless given.
 */
export function recordVocabFold(prog: Program, a: Parameters<typeof vocabPass>[1], label: string): VocabPass {
  const pass = vocabPass(prog.gpu, a, label);
  const N = pass.N;
  pass.chunks.forEach((c, i) => {
    recordChunkLogits(prog, pass, c);
    const p = { rows: N, width: c.width, start: c.start, first: i === 0 ? 1 : 0 };
    const bindings = { logits: c.view, targets: a.targets, rowMax: pass.rowMax, rowSum: pass.rowSum, rowTarget: pass.rowTarget, p };
    // Per logit: compare, subtract, exp, add; the chunk read, three row statistics read and written.
    foldLayout.dispatch(prog, `${label}.fold[${c.start}]`, crossEntropyFoldWgsl, bindings, N, { flops: 4 * N * c.width, bytes: 4 * (N * c.width + 7 * N) });
  });
  return pass;
}

/**
 * Record the one-pass fold (see the header): per chunk, logits, the fold into m, S and G's scale with the chunk
 * turned into P, and G (=, then +=) P · W[c0:c1]. Returns the pass and G, f32 [N, H].
 */
function recordOnePassFold(prog: Program, a: Parameters<typeof vocabPass>[1], label: string): { pass: VocabPass; gradSum: GPUBuffer } {
  const pass = vocabPass(prog.gpu, a, label);
  const { N, lmHead } = pass;
  const H = lmHead.cols;
  const gradSum = prog.gpu.storage(N * H * 4, `${label}.grad-sum`);
  pass.chunks.forEach((c, i) => {
    recordChunkLogits(prog, pass, c);
    const first = i === 0;
    const p = { rows: N, width: c.width, start: c.start, first: first ? 1 : 0, hidden: H };
    const bindings = { logits: c.view, targets: a.targets, rowMax: pass.rowMax, rowSum: pass.rowSum, rowTarget: pass.rowTarget, gradSum, p };
    // Per logit: the max, then subtract, exp, add; per G element one scale (after the first chunk). The chunk read
    // twice and written once, G read and written, the row statistics.
    const cost = { flops: 4 * N * c.width + (first ? 0 : N * H), bytes: 4 * (3 * N * c.width + (first ? 0 : 2 * N * H) + 7 * N) };
    onePassFoldLayout.dispatch(prog, `${label}.fold[${c.start}]`, crossEntropyOnePassFoldWgsl, bindings, N, cost);
    recordMatmulInputGrad(prog, { dy: c.view, w: lmHead, dx: gradSum, M: N, accumulate: !first, rowRange: [c.start, c.start + c.width] }, `${label}.grad-sum`);
  });
  return { pass, gradSum };
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
  /** f32 [N, H], recorded in the one-pass form: G = Σ_j exp(z_j − m) · W_j, the backward's input. */
  gradSum?: GPUBuffer;
}

/**
 * Record the fused lm_head + cross-entropy forward: loss (=) and lse. With `backward` (training) in the one-pass
 * form, which also accumulates the gradient sum G the backward finishes (no lm_head recompute).
 */
export function recordCrossEntropyForward(prog: Program, a: Omit<CrossEntropyArgs, 'dHidden'>, label = 'cross-entropy', backward = false): CrossEntropyForward {
  const gpu = prog.gpu;
  const { pass, gradSum } = backward
    ? recordOnePassFold(prog, { ...a, chunkBytes: a.chunkBytes ?? ONE_PASS_CHUNK_BYTES }, label)
    : { pass: recordVocabFold(prog, a, label), gradSum: undefined };
  const lse = gpu.storage(a.N * 4, `${pass.label}.lse`);
  const bindings = { rowMax: pass.rowMax, rowSum: pass.rowSum, rowTarget: pass.rowTarget, targets: a.targets, invCount: a.invCount, lse, loss: a.loss, p: { rows: a.N, vocab: pass.V } };
  lossLayout.dispatch(prog, `${pass.label}.loss`, crossEntropyLossWgsl, bindings, 1, { flops: 4 * a.N, bytes: 4 * (5 * a.N + 2) });
  return { pass, lse, invCount: a.invCount, gradSum };
}

/** Record the backward of a forward recorded with `backward`: dHidden (=) dLoss/dh = w · (G / S − W[y]). */
export function recordCrossEntropyBackward(prog: Program, f: CrossEntropyForward, dHidden: Binding): void {
  const { pass, gradSum } = f;
  if (!gradSum) throw new Error(`${pass.label}: the forward was recorded without its backward (backward = true)`);
  const { N, lmHead } = pass;
  const H = lmHead.cols;
  const layout = finishLayout(lmHead.dtype);
  const code = crossEntropyFinishWgsl(lmHead.dtype);
  lmHead.parts.forEach((part, i) => {
    const first = i === 0;
    const p = { rows: N, hidden: H, vocab: pass.V, partStart: part.rowStart, partRows: part.rows, first: first ? 1 : 0 };
    const bindings = { gradSum, rowSum: pass.rowSum, targets: pass.targets, invCount: f.invCount, lmHead: part.buffer, dHidden, p };
    // Per element: divide, subtract, scale; G read and dHidden written (later parts: dHidden read and written),
    // targets and S, up to N lm_head rows of the part.
    const cost = { flops: 3 * N * H, bytes: 8 * N * H + 8 * N + Math.min(N, part.rows) * matrixRowBytes(H, lmHead.dtype) };
    layout.dispatch(prog, `${pass.label}.dhidden[${part.rowStart}]`, code, bindings, Math.ceil((N * H) / WG), cost);
  });
}

/**
 * Record the fused lm_head + cross-entropy forward (and, when `dHidden` is given, the one-pass form and its
 * backward). Returns the per-row log-sum-exp buffer f32[N].
 */
export function recordCrossEntropy(prog: Program, a: CrossEntropyArgs, label = 'cross-entropy'): { lse: GPUBuffer } {
  const f = recordCrossEntropyForward(prog, a, label, !!a.dHidden);
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

/** The references' default invCount: 1 / rows with a target in [0, V) (0 when none). */
function defaultInvCount(targets: Int32Array, V: number): number {
  const counted = targets.filter((t) => t >= 0 && t < V).length;
  return counted ? 1 / counted : 0;
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
  const scale = invCount ?? defaultInvCount(targets, V);
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

/**
 * Plain-TS reference of the one-pass form, chunk by chunk as the kernels run it (f64 statistics, the products in
 * f32 as the matmul references give them): loss, lse and dLoss/dh from hidden states and an f32 lm head [V, H].
 */
export function crossEntropyOnePassRef(
  hidden: Float32Array,
  lmHead: Float32Array,
  targets: Int32Array,
  N: number,
  V: number,
  H: number,
  chunk: number,
  invCount?: number,
): { loss: number; lse: Float64Array; dHidden: Float32Array } {
  const scale = invCount ?? defaultInvCount(targets, V);
  const rowMax = new Float64Array(N);
  const rowSum = new Float64Array(N);
  const rowTarget = new Float64Array(N);
  const gradSum = new Float64Array(N * H);
  for (let start = 0; start < V; start += chunk) {
    const width = Math.min(chunk, V - start);
    const first = start === 0;
    const w = lmHead.subarray(start * H, (start + width) * H);
    const z = matmulRef(hidden, w, N, width, H);
    // The fold: m' = max(m, chunk max), α = exp(m − m'), P = exp(z − m') in place, S = α·S + Σ P, G ← α·G.
    for (let n = 0; n < N; n++) {
      let chunkMax = LOWEST;
      for (let j = 0; j < width; j++) chunkMax = Math.max(chunkMax, z[n * width + j]!);
      const m = first ? LOWEST : rowMax[n]!;
      const sum = first ? 0 : rowSum[n]!;
      const mx = Math.max(m, chunkMax);
      const alpha = first ? 1 : Math.exp(m - mx);
      let s = 0;
      for (let j = 0; j < width; j++) {
        const v = z[n * width + j]!;
        if (targets[n] === start + j) rowTarget[n] = v;
        z[n * width + j] = Math.exp(v - mx);
        s += z[n * width + j]!;
      }
      if (!first) for (let k = 0; k < H; k++) gradSum[n * H + k] = gradSum[n * H + k]! * alpha;
      rowMax[n] = mx;
      rowSum[n] = alpha * sum + s;
    }
    // G (=, then +=) P · W[c0:c1].
    const pw = matmulInputGradRef(z, w, N, width, H);
    for (let i = 0; i < N * H; i++) gradSum[i] = (first ? 0 : gradSum[i]!) + pw[i]!;
  }
  const lse = Float64Array.from(rowMax, (m, n) => m + Math.log(rowSum[n]!));
  let total = 0;
  const dHidden = new Float32Array(N * H);
  for (let n = 0; n < N; n++) {
    const t = targets[n]!;
    if (!(t >= 0 && t < V)) continue;
    total += lse[n]! - rowTarget[n]!;
    for (let k = 0; k < H; k++) dHidden[n * H + k] = scale * (gradSum[n * H + k]! / rowSum[n]! - lmHead[t * H + k]!);
  }
  return { loss: total * scale, lse, dHidden };
}
