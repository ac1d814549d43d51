// The preference stages' loss on the GPU: from the per-sequence log-prob sums of the policy (adapter on) and the
// reference (adapter off) to the loss, its gradient dSeq = dLoss/dsums for the sequence head's backward, and the
// logged rewards, accumulated in a small stats buffer that is read back only at logging steps.
//
// The batch has 2P sequences: DPO rows [0, P) chosen, [P, 2P) rejected (pair i = rows i and P+i); KTO rows [0, P)
// the examples (desirable[i] = 1 or 0), [P, 2P) their KL rows (the prompt with another example's answer). A row
// with no counted token is padding: its pair (DPO) or example (KTO) is left out, and its dSeq is 0.
// With v(s) = sums[s] / counts[s] (means: ipo, orpo, simpo) or sums[s], β = beta, per valid pair i, c = i, r = P+i:
//   z = (π_c − π_r) − (ρ_c − ρ_r)
//   sigmoid −log σ(βz)   hinge max(0, 1 − βz)   ipo (z − 1/(2β))²      rewards β(π − ρ)
//   orpo   −π_c + β·(−log σ(o)), o = (π_c − π_r) − (log(1 − e^{π_c}) − log(1 − e^{π_r}))     rewards βπ
//   simpo  −log σ(β(π_c − π_r) − γ)                                                          rewards βπ
//   + ftx·(−sum_c / count_c) on the chosen answer
// KTO, per valid example i with ratio = π_i − ρ_i (sums), KL = max(0, mean over valid KL rows of (π − ρ)):
//   desirable w_c·(1 − σ(β(ratio − KL)))    undesirable w_r·(1 − σ(β(KL − ratio)))
//   + ftx·(−sum_i / count_i)·(n / n_d)² on desirable ones (n valid, n_d desirable: after the mean over the n
//   examples this is LLaMA-Factory's ftx · mean_desirable(−mean log-prob) · n / n_d)
// The micro-batch loss is the mean over valid pairs / examples times `scale` (1 / micro-batches per optimizer
// step, so the accumulated step is their mean, as transformers divides by the accumulation steps); dSeq is its
// derivative (KL rows and the reference get none). One workgroup: pass 1 counts valid pairs and sums the KL rows,
// pass 2 computes each pair in a thread, then fixed-order tree sums add the loss and metrics into `stats`:
//   [0] loss  [1] Σ chosen reward  [2] Σ rejected reward  [3] Σ accuracy  [4] Σ margin  [5] Σ chosen logp
//   [6] Σ rejected logp  [7] chosen count  [8] rejected count  [9] Σ KL  [10] micro-batches
// DPO adds per-micro-batch means into [1..6] and 1 into [7], [8] (LLaMA-Factory logs the mean of batch means);
// KTO adds sums over the desirable / undesirable examples and their counts (LLaMA-Factory logs sum / count).
// f32 throughout, with Kahan's log1p / expm1 forms (WGSL has neither).
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import type { Binding, Program } from '../gpu/program.js';

const WG = 64;

export const PREFERENCE_KINDS = ['sigmoid', 'hinge', 'ipo', 'orpo', 'simpo', 'kto'] as const;
export type PreferenceKind = (typeof PREFERENCE_KINDS)[number];

/** Floats of the stats buffer (layout in the header). */
export const PREFERENCE_STATS = 11;

export interface PreferenceLossSettings {
  kind: PreferenceKind;
  beta: number;
  ftx: number;
  /** SimPO's γ. */
  gamma: number;
  /** KTO's desirable / undesirable weights. */
  chosenWeight: number;
  rejectedWeight: number;
  /** Multiplies the micro-batch loss and dSeq (1 / micro-batches per optimizer step). */
  scale: number;
}

/** Whether the kind compares per-token means (LLaMA-Factory divides by the answer's length for these). */
export function kindUsesMeans(kind: PreferenceKind): boolean {
  return kind === 'ipo' || kind === 'orpo' || kind === 'simpo';
}

/** Whether the kind needs the reference (adapter off) sums. */
export function kindUsesReference(kind: PreferenceKind): boolean {
  return kind !== 'orpo' && kind !== 'simpo';
}

const layout = kernelLayout({
  sums: storage(), counts: storage(), refSums: storage(), desirable: storage('array<u32>'),
  dSeq: output(), stats: output(),
  p: uniform({ pairs: 'u32', kind: 'u32', means: 'u32', beta: 'f32', ftx: 'f32', gamma: 'f32', chosenWeight: 'f32', rejectedWeight: 'f32', scale: 'f32' }),
});

/** Accumulators per thread: loss, rc, rr, acc, margin, lc, lr, nc, nr. */
const ACC = 9;

export const preferenceLossWgsl = /* wgsl */ `
${layout.wgsl}
var<workgroup> part: array<f32, ${WG * ACC}>;

fn log1pK(y: f32) -> f32 {
  let u = 1.0 + y;
  if (u == 1.0) { return y; }
  return log(u) * y / (u - 1.0);
}
fn expm1K(a: f32) -> f32 {
  let u = exp(a);
  if (u == 1.0) { return a; }
  if (u == 0.0) { return -1.0; }
  return (u - 1.0) * a / log(u);
}
fn sigmoidK(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}
// −log σ(x)
fn nlsK(x: f32) -> f32 {
  if (x >= 0.0) { return log1pK(exp(-x)); }
  return -x + log1pK(exp(x));
}
fn valueK(s: u32) -> f32 {
  if (p.means != 0u) { return sums[s] / max(1.0, counts[s]); }
  return sums[s];
}
fn refValueK(s: u32) -> f32 {
  if (p.means != 0u) { return refSums[s] / max(1.0, counts[s]); }
  return refSums[s];
}
// Fixed-order tree sum of the first k accumulators over the workgroup; every thread gets part[j] (j < k) = total.
fn reduceK(lid: u32, k: u32) {
  workgroupBarrier();
  for (var half = ${WG / 2}u; half > 0u; half >>= 1u) {
    if (lid < half) {
      for (var j = 0u; j < k; j++) { part[lid * ${ACC}u + j] += part[(lid + half) * ${ACC}u + j]; }
    }
    workgroupBarrier();
  }
}

${entryWgsl(WG)} {
  let P = p.pairs;
  let kto = p.kind == 5u;
  let b = p.beta;
  // Pass 1: valid pairs (examples), and the KL rows' Σ(π − ρ) and count.
  var nValid = 0.0;
  var klSum = 0.0;
  var klCount = 0.0;
  var nDesirable = 0.0;
  for (var i = lid; i < P; i += ${WG}u) {
    if (kto) {
      if (counts[i] > 0.0) {
        nValid += 1.0;
        if (desirable[i] != 0u) { nDesirable += 1.0; }
      }
      if (counts[P + i] > 0.0) { klSum += sums[P + i] - refSums[P + i]; klCount += 1.0; }
    } else if (counts[i] > 0.0 && counts[P + i] > 0.0) { nValid += 1.0; }
  }
  part[lid * ${ACC}u] = nValid;
  part[lid * ${ACC}u + 1u] = klSum;
  part[lid * ${ACC}u + 2u] = klCount;
  part[lid * ${ACC}u + 3u] = nDesirable;
  reduceK(lid, 4u);
  let n = max(1.0, part[0]);
  let kl = max(0.0, part[1] / max(1.0, part[2]));
  let ftxRescale = (n / max(1.0, part[3])) * (n / max(1.0, part[3]));
  let perPair = p.scale / n;
  workgroupBarrier();
  // Pass 2: each pair's loss, dSeq and metrics.
  var acc: array<f32, ${ACC}>;
  for (var j = 0u; j < ${ACC}u; j++) { acc[j] = 0.0; }
  for (var i = lid; i < P; i += ${WG}u) {
    let c = i;
    let r = P + i;
    dSeq[r] = 0.0;
    if (kto) {
      if (counts[c] == 0.0) { dSeq[c] = 0.0; continue; }
      let ratio = sums[c] - refSums[c];
      let good = desirable[i] != 0u;
      var x = b * (kl - ratio);
      var w = p.rejectedWeight;
      var sign = -1.0;
      if (good) { x = b * (ratio - kl); w = p.chosenWeight; sign = 1.0; }
      let s = sigmoidK(x);
      var loss = w * (1.0 - s);
      var d = -w * s * (1.0 - s) * sign * b;
      if (good && p.ftx > 0.0) {
        loss += -p.ftx * sums[c] / max(1.0, counts[c]) * ftxRescale;
        d += -p.ftx / max(1.0, counts[c]) * ftxRescale;
      }
      dSeq[c] = d * perPair;
      acc[0] += loss;
      if (good) { acc[1] += b * ratio; acc[5] += sums[c]; acc[7] += 1.0; }
      else { acc[2] += b * ratio; acc[6] += sums[c]; acc[8] += 1.0; }
      continue;
    }
    if (counts[c] == 0.0 || counts[r] == 0.0) { dSeq[c] = 0.0; continue; }
    let pc = valueK(c);
    let pr = valueK(r);
    var loss = 0.0;
    var dc = 0.0;
    var dr = 0.0;
    var rc = b * pc;
    var rr = b * pr;
    if (p.kind <= 2u) {
      let z = (pc - pr) - (refValueK(c) - refValueK(r));
      var dz = 0.0;
      if (p.kind == 0u) {
        loss = nlsK(b * z);
        dz = -b * sigmoidK(-b * z);
      } else if (p.kind == 1u) {
        loss = max(0.0, 1.0 - b * z);
        if (loss > 0.0) { dz = -b; }
      } else {
        let e = z - 1.0 / (2.0 * b);
        loss = e * e;
        dz = 2.0 * e;
      }
      dc = dz;
      dr = -dz;
      rc = b * (pc - refValueK(c));
      rr = b * (pr - refValueK(r));
    } else if (p.kind == 3u) {
      // log(1 − e^a) = log(−expm1(a)), derivative −1/expm1(−a)
      let lc = log(-expm1K(pc));
      let lr = log(-expm1K(pr));
      let o = (pc - pr) - (lc - lr);
      let go = -sigmoidK(-o);
      loss = -pc + b * nlsK(o);
      dc = -1.0 + b * go * (1.0 + 1.0 / expm1K(-pc));
      dr = b * go * (-1.0 - 1.0 / expm1K(-pr));
    } else {
      let x = b * (pc - pr) - p.gamma;
      loss = nlsK(x);
      dc = -b * sigmoidK(-x);
      dr = -dc;
    }
    var toSumC = 1.0;
    var toSumR = 1.0;
    if (p.means != 0u) { toSumC = 1.0 / max(1.0, counts[c]); toSumR = 1.0 / max(1.0, counts[r]); }
    var gc = dc * toSumC;
    if (p.ftx > 0.0) {
      loss += -p.ftx * sums[c] / max(1.0, counts[c]);
      gc += -p.ftx / max(1.0, counts[c]);
    }
    dSeq[c] = gc * perPair;
    dSeq[r] = dr * toSumR * perPair;
    acc[0] += loss;
    acc[1] += rc;
    acc[2] += rr;
    if (rc > rr) { acc[3] += 1.0; }
    acc[4] += rc - rr;
    acc[5] += pc;
    acc[6] += pr;
  }
  for (var j = 0u; j < ${ACC}u; j++) { part[lid * ${ACC}u + j] = acc[j]; }
  reduceK(lid, ${ACC}u);
  if (lid == 0u) {
    stats[0] += part[0] * perPair;
    if (kto) {
      for (var j = 1u; j < ${ACC}u; j++) { stats[j] += part[j]; }
      stats[9] += kl;
    } else {
      for (var j = 1u; j < 7u; j++) { stats[j] += part[j] / n; }
      stats[7] += 1.0;
      stats[8] += 1.0;
    }
    stats[10] += 1.0;
  }
}`;

export interface PreferenceLossArgs {
  /** f32 [2P]: the policy's per-sequence log-prob sums and counted tokens (the sequence head's sums, counts). */
  sums: Binding;
  counts: Binding;
  /** f32 [2P]: the reference's sums (kinds without a reference: any [2P] buffer, e.g. `sums`). */
  refSums: Binding;
  /** u32 [P]: KTO's labels (1 desirable); other kinds: any u32 buffer of >= 1 element. */
  desirable: Binding;
  /** f32 [2P] (=): dLoss/dsums. */
  dSeq: Binding;
  /** f32 [PREFERENCE_STATS] (+=): loss and metrics. */
  stats: Binding;
  pairs: number;
  settings: PreferenceLossSettings;
}

export function recordPreferenceLoss(prog: Program, a: PreferenceLossArgs, label = 'preference-loss'): void {
  const s = a.settings;
  if (!(Number.isInteger(a.pairs) && a.pairs >= 1)) throw new Error(`a preference loss needs at least one pair, got ${a.pairs}`);
  // Per pair: a few dozen operations (log-ratios, a log-sigmoid and its derivative); sums, counts, reference
  // sums and dSeq of both rows, a label.
  layout.dispatch(prog, label, preferenceLossWgsl, {
    sums: a.sums, counts: a.counts, refSums: a.refSums, desirable: a.desirable, dSeq: a.dSeq, stats: a.stats,
    p: {
      pairs: a.pairs, kind: PREFERENCE_KINDS.indexOf(s.kind), means: kindUsesMeans(s.kind) ? 1 : 0, beta: s.beta, ftx: s.ftx,
      gamma: s.gamma, chosenWeight: s.chosenWeight, rejectedWeight: s.rejectedWeight, scale: s.scale,
    },
  }, 1, { flops: 40 * a.pairs, bytes: 4 * (9 * a.pairs + PREFERENCE_STATS) });
}

/** Plain-TS reference of the kernel (f64), same passes and formulas; adds into `stats` and returns dSeq. */
export function preferenceLossRef(
  st: PreferenceLossSettings, sums: ArrayLike<number>, counts: ArrayLike<number>, refSums: ArrayLike<number>, desirable: ArrayLike<number>, stats: Float64Array,
): Float64Array {
  const P = sums.length / 2;
  const kto = st.kind === 'kto';
  const means = kindUsesMeans(st.kind);
  const b = st.beta;
  const sig = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
  const nls = (x: number) => (x >= 0 ? Math.log1p(Math.exp(-x)) : -x + Math.log1p(Math.exp(x)));
  const value = (s: number) => (means ? sums[s]! / Math.max(1, counts[s]!) : sums[s]!);
  const refValue = (s: number) => (means ? refSums[s]! / Math.max(1, counts[s]!) : refSums[s]!);
  let nValid = 0, klSum = 0, klCount = 0, nDesirable = 0;
  for (let i = 0; i < P; i++) {
    if (kto) {
      if (counts[i]! > 0) {
        nValid++;
        if (desirable[i] !== 0) nDesirable++;
      }
      if (counts[P + i]! > 0) { klSum += sums[P + i]! - refSums[P + i]!; klCount++; }
    } else if (counts[i]! > 0 && counts[P + i]! > 0) nValid++;
  }
  const n = Math.max(1, nValid);
  const kl = Math.max(0, klSum / Math.max(1, klCount));
  const ftxRescale = (n / Math.max(1, nDesirable)) ** 2;
  const perPair = st.scale / n;
  const acc = new Float64Array(ACC);
  const dSeq = new Float64Array(2 * P);
  for (let i = 0; i < P; i++) {
    const c = i, r = P + i;
    if (kto) {
      if (counts[c] === 0) continue;
      const ratio = sums[c]! - refSums[c]!;
      const good = desirable[i] !== 0;
      const x = good ? b * (ratio - kl) : b * (kl - ratio);
      const w = good ? st.chosenWeight : st.rejectedWeight;
      const s = sig(x);
      let loss = w * (1 - s);
      let d = -w * s * (1 - s) * (good ? 1 : -1) * b;
      if (good && st.ftx > 0) {
        loss += ((-st.ftx * sums[c]!) / Math.max(1, counts[c]!)) * ftxRescale;
        d += (-st.ftx / Math.max(1, counts[c]!)) * ftxRescale;
      }
      dSeq[c] = d * perPair;
      acc[0]! += loss;
      if (good) { acc[1]! += b * ratio; acc[5]! += sums[c]!; acc[7]! += 1; } else { acc[2]! += b * ratio; acc[6]! += sums[c]!; acc[8]! += 1; }
      continue;
    }
    if (counts[c] === 0 || counts[r] === 0) continue;
    const pc = value(c), pr = value(r);
    let loss: number, dc: number, dr: number, rc = b * pc, rr = b * pr;
    if (st.kind === 'sigmoid' || st.kind === 'hinge' || st.kind === 'ipo') {
      const z = (pc - pr) - (refValue(c) - refValue(r));
      let dz = 0;
      if (st.kind === 'sigmoid') { loss = nls(b * z); dz = -b * sig(-b * z); } else if (st.kind === 'hinge') { loss = Math.max(0, 1 - b * z); if (loss > 0) dz = -b; } else { const e = z - 1 / (2 * b); loss = e * e; dz = 2 * e; }
      dc = dz; dr = -dz;
      rc = b * (pc - refValue(c)); rr = b * (pr - refValue(r));
    } else if (st.kind === 'orpo') {
      const lc = Math.log(-Math.expm1(pc)), lr = Math.log(-Math.expm1(pr));
      const o = (pc - pr) - (lc - lr);
      const go = -sig(-o);
      loss = -pc + b * nls(o);
      dc = -1 + b * go * (1 + 1 / Math.expm1(-pc));
      dr = b * go * (-1 - 1 / Math.expm1(-pr));
    } else {
      const x = b * (pc - pr) - st.gamma;
      loss = nls(x); dc = -b * sig(-x); dr = -dc;
    }
    const toSumC = means ? 1 / Math.max(1, counts[c]!) : 1, toSumR = means ? 1 / Math.max(1, counts[r]!) : 1;
    let gc = dc * toSumC;
    if (st.ftx > 0) { loss += (-st.ftx * sums[c]!) / Math.max(1, counts[c]!); gc += -st.ftx / Math.max(1, counts[c]!); }
    dSeq[c] = gc * perPair;
    dSeq[r] = dr * toSumR * perPair;
    acc[0]! += loss; acc[1]! += rc; acc[2]! += rr; if (rc > rr) acc[3]! += 1; acc[4]! += rc - rr; acc[5]! += pc; acc[6]! += pr;
  }
  stats[0]! += acc[0]! * perPair;
  if (kto) {
    for (let j = 1; j < ACC; j++) stats[j]! += acc[j]!;
    stats[9]! += kl;
  } else {
    for (let j = 1; j < 7; j++) stats[j]! += acc[j]! / n;
    stats[7]! += 1; stats[8]! += 1;
  }
  stats[10]! += 1;
  return dSeq;
}

/** The logged metrics from accumulated stats (LLaMA-Factory's names): KTO logs kl and no accuracies. */
export function preferenceMetricsOf(kind: PreferenceKind, stats: ArrayLike<number>): Record<string, number> {
  const div = (a: number, b: number) => (b > 0 ? a / b : 0);
  const chosen = div(stats[1]!, stats[7]!), rejected = div(stats[2]!, stats[8]!);
  const m: Record<string, number> = { 'rewards/chosen': chosen, 'rewards/rejected': rejected };
  if (kind !== 'kto') m['rewards/accuracies'] = div(stats[3]!, stats[10]!);
  m['rewards/margins'] = chosen - rejected;
  m['logps/chosen'] = div(stats[5]!, stats[7]!);
  m['logps/rejected'] = div(stats[6]!, stats[8]!);
  if (kind === 'kto') m.kl = div(stats[9]!, stats[10]!);
  return m;
}
