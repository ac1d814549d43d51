// Preference losses on per-sequence log-probs, as LLaMA-Factory defines them, with their gradient with respect
// to the per-sequence log-prob sums (what the sequence log-prob head takes back as dSeq).
//
// Per pair, with policy log-probs π and reference log-probs ρ of the chosen (c) and rejected (r) answer — sums
// for sigmoid and hinge, means (sum / counted tokens) for ipo, orpo and simpo — and β = pref_beta:
//   z       = (π_c − π_r) − (ρ_c − ρ_r)
//   sigmoid = −log σ(β·z)                        rewards β(π_c − ρ_c), β(π_r − ρ_r)
//   hinge   = max(0, 1 − β·z)                    rewards as sigmoid
//   ipo     = (z − 1/(2β))²                      rewards as sigmoid
//   orpo    = −π_c + β·(−log σ(o)),  o = (π_c − π_r) − (log(1 − e^{π_c}) − log(1 − e^{π_r}))   rewards βπ_c, βπ_r
//   simpo   = −log σ(β·((π_c − π_r) − γ/β))     rewards βπ_c, βπ_r  (γ = simpo_gamma)
// orpo and simpo use no reference. pref_ftx adds ftx·(−mean log-prob of the chosen answer). The batch loss is the
// mean over pairs. KTO (per example, label desirable or not, KL a detached batch estimate clamped at 0):
//   desirable   = w_c·(1 − σ(β·((π − ρ) − KL)))     undesirable = w_r·(1 − σ(β·(KL − (π − ρ))))
// on sums, the mean over examples, rewards β(π − ρ); pref_ftx adds, as LLaMA-Factory does, ftx · (mean over the
// desirable examples of −mean log-prob) · examples / desirable examples.
// Everything here is float64 arithmetic on a handful of numbers per step.

export const PREF_LOSSES = ['sigmoid', 'hinge', 'ipo', 'orpo', 'simpo'] as const;
export type PrefLoss = (typeof PREF_LOSSES)[number];

export interface PreferenceSettings {
  loss: PrefLoss;
  beta: number;
  /** Weight of the SFT term −mean log p(chosen) (pref_ftx). */
  ftx: number;
  /** SimPO's target margin γ (simpo_gamma). */
  simpoGamma: number;
}

/** One sequence's log-prob sum and its counted tokens (the sequence head's sums[s], counts[s]). */
export interface SequenceLogps {
  sum: number;
  count: number;
}

export interface PairLogps {
  chosen: SequenceLogps;
  rejected: SequenceLogps;
}

/** LLaMA-Factory's logged metrics, means over the batch. */
export interface PreferenceMetrics {
  'rewards/chosen': number;
  'rewards/rejected': number;
  'rewards/accuracies': number;
  'rewards/margins': number;
  'logps/chosen': number;
  'logps/rejected': number;
}

export interface PreferenceResult {
  loss: number;
  /** dLoss/d(policy sum) per pair: [chosen, rejected]. */
  dSums: Array<[number, number]>;
  metrics: PreferenceMetrics;
}

/** −log σ(x) and its derivative −σ(−x), stable for large |x|. */
function negLogSigmoid(x: number): { value: number; grad: number } {
  const value = x >= 0 ? Math.log1p(Math.exp(-x)) : -x + Math.log1p(Math.exp(x));
  return { value, grad: -sigmoid(-x) };
}

function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** log(1 − e^a) for a < 0 and its derivative −1/(e^{−a} − 1). */
function log1mExp(a: number): { value: number; grad: number } {
  return { value: Math.log(-Math.expm1(a)), grad: -1 / Math.expm1(-a) };
}

/** Whether the loss works on means (LLaMA-Factory divides by the answer's length for these). */
export function usesMeans(loss: PrefLoss): boolean {
  return loss === 'ipo' || loss === 'orpo' || loss === 'simpo';
}

/** Whether the loss needs the reference (adapter off) log-probs. */
export function usesReference(loss: PrefLoss): boolean {
  return loss !== 'orpo' && loss !== 'simpo';
}

function perToken(s: SequenceLogps): number {
  return s.sum / Math.max(1, s.count);
}

/** One pair's loss and its derivatives with respect to the policy quantities it uses (sums or means). */
function pairLoss(st: PreferenceSettings, pc: number, pr: number, rc: number, rr: number): { loss: number; dc: number; dr: number; chosenReward: number; rejectedReward: number } {
  const b = st.beta;
  switch (st.loss) {
    case 'sigmoid': case 'hinge': case 'ipo': {
      const z = (pc - pr) - (rc - rr);
      let loss: number, dz: number;
      if (st.loss === 'sigmoid') {
        const l = negLogSigmoid(b * z);
        loss = l.value;
        dz = b * l.grad;
      } else if (st.loss === 'hinge') {
        loss = Math.max(0, 1 - b * z);
        dz = loss > 0 ? -b : 0;
      } else {
        const d = z - 1 / (2 * b);
        loss = d * d;
        dz = 2 * d;
      }
      return { loss, dc: dz, dr: -dz, chosenReward: b * (pc - rc), rejectedReward: b * (pr - rr) };
    }
    case 'orpo': {
      const lc = log1mExp(pc), lr = log1mExp(pr);
      const o = negLogSigmoid((pc - pr) - (lc.value - lr.value));
      return { loss: -pc + b * o.value, dc: -1 + b * o.grad * (1 - lc.grad), dr: b * o.grad * (-1 + lr.grad), chosenReward: b * pc, rejectedReward: b * pr };
    }
    case 'simpo': {
      const l = negLogSigmoid(b * ((pc - pr) - st.simpoGamma / b));
      return { loss: l.value, dc: b * l.grad, dr: -b * l.grad, chosenReward: b * pc, rejectedReward: b * pr };
    }
  }
}

/**
 * The batch's preference loss (mean over pairs), its gradient with respect to each policy sum, and the metrics.
 * `reference` is ignored by orpo and simpo (pass the policy's own values or anything of the same length).
 */
export function preferenceLoss(st: PreferenceSettings, policy: PairLogps[], reference: PairLogps[]): PreferenceResult {
  if (policy.length === 0 || reference.length !== policy.length) throw new Error(`${policy.length} policy pairs and ${reference.length} reference pairs`);
  const means = usesMeans(st.loss);
  const value = (s: SequenceLogps) => (means ? perToken(s) : s.sum);
  const n = policy.length;
  let loss = 0;
  const m: PreferenceMetrics = { 'rewards/chosen': 0, 'rewards/rejected': 0, 'rewards/accuracies': 0, 'rewards/margins': 0, 'logps/chosen': 0, 'logps/rejected': 0 };
  const dSums: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) {
    const p = policy[i]!, r = reference[i]!;
    const pc = value(p.chosen), pr = value(p.rejected);
    const out = pairLoss(st, pc, pr, value(r.chosen), value(r.rejected));
    // SFT term on the chosen answer's mean log-prob.
    const ftx = st.ftx > 0 ? -st.ftx * perToken(p.chosen) : 0;
    loss += (out.loss + ftx) / n;
    const toSumC = means ? 1 / Math.max(1, p.chosen.count) : 1;
    const toSumR = means ? 1 / Math.max(1, p.rejected.count) : 1;
    dSums.push([(out.dc * toSumC - (st.ftx > 0 ? st.ftx / Math.max(1, p.chosen.count) : 0)) / n, (out.dr * toSumR) / n]);
    m['rewards/chosen'] += out.chosenReward / n;
    m['rewards/rejected'] += out.rejectedReward / n;
    m['rewards/accuracies'] += (out.chosenReward > out.rejectedReward ? 1 : 0) / n;
    m['rewards/margins'] += (out.chosenReward - out.rejectedReward) / n;
    m['logps/chosen'] += pc / n;
    m['logps/rejected'] += pr / n;
  }
  return { loss, dSums, metrics: m };
}

export interface KtoSettings {
  beta: number;
  chosenWeight: number;
  rejectedWeight: number;
  ftx: number;
}

export interface KtoExample {
  policy: SequenceLogps;
  reference: SequenceLogps;
  desirable: boolean;
}

export interface KtoResult {
  loss: number;
  /** dLoss/d(policy sum) per example. */
  dSums: number[];
  /** The clamped KL estimate used (no gradient flows through it). */
  kl: number;
  metrics: PreferenceMetrics;
}

/**
 * KTO over a batch of labelled examples. `klPolicy` / `klReference`: sums of the mismatched (prompt, other
 * answer) sequences, whose mean difference clamped at 0 is the detached KL estimate.
 */
export function ktoLoss(st: KtoSettings, examples: KtoExample[], klPolicy: number[], klReference: number[]): KtoResult {
  if (examples.length === 0) throw new Error('KTO needs at least one example');
  if (klPolicy.length !== klReference.length) throw new Error(`${klPolicy.length} KL policy sums and ${klReference.length} reference sums`);
  let kl = 0;
  for (let i = 0; i < klPolicy.length; i++) kl += (klPolicy[i]! - klReference[i]!) / Math.max(1, klPolicy.length);
  kl = Math.max(0, kl);
  const n = examples.length;
  const b = st.beta;
  let loss = 0;
  const dSums: number[] = [];
  const chosen = examples.filter((e) => e.desirable), rejected = examples.filter((e) => !e.desirable);
  for (const e of examples) {
    const ratio = e.policy.sum - e.reference.sum;
    // 1 − σ(x) = σ(−x); d/dx = −σ(x)σ(−x).
    const x = e.desirable ? b * (ratio - kl) : b * (kl - ratio);
    const w = e.desirable ? st.chosenWeight : st.rejectedWeight;
    const s = sigmoid(x);
    loss += (w * (1 - s)) / n;
    let d = (-w * s * (1 - s) * (e.desirable ? b : -b)) / n;
    if (e.desirable && st.ftx > 0) {
      // LLaMA-Factory adds ftx · mean over desirable of (−mean log-prob) · n / n_desirable.
      const rescale = n / (chosen.length * chosen.length);
      loss += -st.ftx * perToken(e.policy) * rescale;
      d += (-st.ftx / Math.max(1, e.policy.count)) * rescale;
    }
    dSums.push(d);
  }
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, v) => a + v, 0) / xs.length : 0);
  const cr = mean(chosen.map((e) => b * (e.policy.sum - e.reference.sum)));
  const rr = mean(rejected.map((e) => b * (e.policy.sum - e.reference.sum)));
  const metrics: PreferenceMetrics = {
    'rewards/chosen': cr,
    'rewards/rejected': rr,
    'rewards/accuracies': chosen.length && rejected.length ? (cr > rr ? 1 : 0) : 0,
    'rewards/margins': cr - rr,
    'logps/chosen': mean(chosen.map((e) => e.policy.sum)),
    'logps/rejected': mean(rejected.map((e) => e.policy.sum)),
  };
  return { loss, dSums, kl, metrics };
}
