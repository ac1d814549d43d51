// Parity against a reference case laid out like shared/fixtures/qwen3/*: model/, adapter/, case.safetensors.
// Works for any Qwen3 shape: every size comes from the files.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Gpu } from './gpu/device.js';
import { Program } from './gpu/program.js';
import { loadModelConfig, type ModelConfig } from './model/config.js';
import { Checkpoint } from './model/safetensors.js';
import { loadModelWeights, releaseModelWeights, type ModelWeights } from './model/weights.js';
import { plainBatch, Qwen3Graph, shiftLabels } from './model/qwen3.js';
import { loadPeftAdapter, readLoraTensors, releaseLora, writeLoraTensors, type LoraWeights } from './train/lora.js';
import { adapterAdamW, LoraTrainer, type PreferenceObjective, type StepBatch } from './train/trainer.js';
import { fileError } from './errors.js';
import { readJsonFile } from './json-file.js';

export interface ParityResult {
  case: string;
  logits_max_abs: number;
  loss_abs: number;
  hidden_max_abs: number;
  lora_logits_max_abs: number | null;
  lora_loss_abs: number | null;
  grad_max_rel: number | null;
  /** AdamW step from the reference gradients (the optimizer alone). */
  step1_max_abs: number | null;
  /** AdamW step from our own gradients, over elements whose reference gradient exceeds 100·eps. */
  step1_own_grads_max_abs: number | null;
  /** Three trainer steps (train3.safetensors): worst relative difference of the losses and gradient norms (before and after clipping). */
  train3_loss_max_rel: number | null;
  /** The 99.9th percentile of |Δ| over every LoRA element after each of the three steps (the worst step). */
  train3_p999_abs: number | null;
  /** The largest |Δ| of any LoRA element after any of the three steps. */
  train3_max_abs: number | null;
  /** preference.safetensors: worst |Δ| of the policy and reference log-prob sums and means. */
  pref_logps_max_abs: number | null;
  /** Worst |Δ| of loss.dpo, loss.orpo, loss.simpo. */
  pref_loss_max_abs: number | null;
  /** Worst relative difference of their LoRA gradients. */
  pref_grad_max_rel: number | null;
}

/** The optimizer of train3.safetensors (see the fixtures' README): every step clipped, decay made visible. */
const TRAIN3 = { steps: 3, lr: 1e-4, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1.0, maxGradNorm: 0.6 } };

/** The q-quantile of `values` (q in [0, 1]; nearest rank). */
function quantile(values: Float32Array, q: number): number {
  const sorted = Float32Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/**
 * Run the trainer for three optimizer steps on the case's batch from the adapter's values and compare the loss
 * and gradient norm at each step and every LoRA tensor after it with the reference run.
 */
async function train3Parity(gpu: Gpu, file: string, config: ModelConfig, weights: ModelWeights, lora: LoraWeights, batch: StepBatch, B: number, T: number): Promise<Pick<ParityResult, 'train3_loss_max_rel' | 'train3_p999_abs' | 'train3_max_abs'>> {
  const ref = Checkpoint.open(file);
  const trainer = new LoraTrainer(gpu, config, weights, lora, { B, T, recompute: true, hyper: TRAIN3.hyper });
  try {
    let lossRel = 0;
    let p999 = 0;
    let worst = 0;
    const rel = (a: number, b: number) => (a === b ? 0 : Math.abs(a - b) / Math.abs(b) || Infinity);
    for (let k = 1; k <= TRAIN3.steps; k++) {
      trainer.step([batch], k, TRAIN3.lr);
      const loss = await trainer.readMeanLoss();
      const { gradNorm, clipScale } = await trainer.optimizer.readStats();
      const refNorm = ref.readF32(`grad_norm.${k}`)[0]!;
      // AdamW hardly sees a common scale of the gradients, so clipping is checked on the clipped norm itself
      // (clip_grad_norm_ multiplies by max_norm / (norm + 1e-6) when that is below 1).
      const refClipped = refNorm * Math.min(1, TRAIN3.hyper.maxGradNorm / (refNorm + 1e-6));
      lossRel = Math.max(lossRel, rel(loss, ref.readF32(`loss.${k}`)[0]!), rel(gradNorm, refNorm), rel(gradNorm * clipScale, refClipped));
      const after = await readLoraTensors(gpu, lora, 'weights');
      const diffs: number[] = [];
      for (const [name, values] of after) {
        const want = ref.readF32(`after.${k}.${name}`);
        if (want.length !== values.length) throw fileError(file, `after.${k}.${name} has ${want.length} values, the adapter ${values.length}`);
        for (let i = 0; i < values.length; i++) diffs.push(Math.abs(values[i]! - want[i]!));
      }
      const d = Float32Array.from(diffs, (x) => (Number.isNaN(x) ? Infinity : x));
      p999 = Math.max(p999, quantile(d, 0.999));
      worst = Math.max(worst, d.reduce((m, x) => Math.max(m, x), 0));
    }
    return { train3_loss_max_rel: lossRel, train3_p999_abs: p999, train3_max_abs: worst };
  } finally {
    trainer.destroy();
    ref.close();
  }
}

/** The fixture's preference settings (see the fixtures' README). */
const PREF_CASES: Array<{ kind: string; objective: PreferenceObjective }> = [
  { kind: 'dpo', objective: { kind: 'sigmoid', beta: 0.1, ftx: 0, gamma: 0, chosenWeight: 1, rejectedWeight: 1 } },
  { kind: 'orpo', objective: { kind: 'orpo', beta: 0.1, ftx: 0, gamma: 0, chosenWeight: 1, rejectedWeight: 1 } },
  { kind: 'simpo', objective: { kind: 'simpo', beta: 2.0, ftx: 0, gamma: 0.5, chosenWeight: 1, rejectedWeight: 1 } },
];

/**
 * Rows 0 and 1 of the case's batch are the chosen and the rejected answer (rows are independent, so the others
 * are left out). Each loss runs the training step itself (LoraTrainer with the preference objective, without the
 * update): the reference forward with the adapter off, the policy forward, the loss and dSeq on the GPU, the
 * backward into the LoRA gradients.
 */
async function preferenceParity(gpu: Gpu, file: string, config: ModelConfig, weights: ModelWeights, lora: LoraWeights, ids: Uint32Array, targets: Int32Array, T: number): Promise<Pick<ParityResult, 'pref_logps_max_abs' | 'pref_loss_max_abs' | 'pref_grad_max_rel'>> {
  const ref = Checkpoint.open(file);
  const batch: StepBatch = { ...plainBatch(ids.subarray(0, 2 * T), 2, T), targets: targets.slice(0, 2 * T) };
  const hyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };
  let logps = 0;
  let lossMax = 0;
  let gradRel = 0;
  try {
    for (const { kind, objective } of PREF_CASES) {
      const trainer = new LoraTrainer(gpu, config, weights, lora, { B: 2, T, recompute: true, hyper, preference: objective });
      try {
        trainer.accumulateGradients([batch], 1);
        lossMax = Math.max(lossMax, Math.abs((await trainer.readMeanLoss()) - ref.readF32(`loss.${kind}`)[0]!));
        for (const [name, g] of await readLoraTensors(gpu, lora, 'grads')) gradRel = Math.max(gradRel, maxRel(g, ref.readF32(`grad.${kind}.${name}`)));
        const { policy, reference } = await trainer.readSequenceLogps();
        const avg = (r: { sums: Float32Array; counts: Float32Array }) => r.sums.map((v, i) => v / r.counts[i]!);
        logps = Math.max(logps, maxAbs(policy.sums, ref.readF32('policy_logps_sum')), maxAbs(avg(policy), ref.readF32('policy_logps_avg')));
        if (reference) logps = Math.max(logps, maxAbs(reference.sums, ref.readF32('ref_logps_sum')), maxAbs(avg({ ...reference, counts: policy.counts }), ref.readF32('ref_logps_avg')));
      } finally {
        trainer.destroy();
      }
    }
    return { pref_logps_max_abs: logps, pref_loss_max_abs: lossMax, pref_grad_max_rel: gradRel };
  } finally {
    ref.close();
  }
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    m = d > m || Number.isNaN(d) ? (Number.isNaN(d) ? Infinity : d) : m;
  }
  return m;
}

function maxRel(a: Float32Array, ref: Float32Array): number {
  let scale = 0;
  for (const v of ref) scale = Math.max(scale, Math.abs(v));
  return maxAbs(a, ref) / (scale || 1);
}

export async function runParity(gpu: Gpu, dir: string): Promise<ParityResult> {
  const caseFile = path.join(dir, 'case.safetensors');
  if (!fs.existsSync(caseFile)) throw fileError(caseFile, 'not found');
  const config = loadModelConfig(path.join(dir, 'model'));
  const ckpt = Checkpoint.open(path.join(dir, 'model'));
  const ref = Checkpoint.open(caseFile);
  const weights = loadModelWeights(gpu, ckpt, config, 'f32');
  ckpt.close();
  try {
    const [B, T] = ref.tensors.get('input_ids')!.shape as [number, number];
    const ids = ref.readF32('input_ids');
    const targets = shiftLabels(ref.readF32('labels'), B, T);
    const batch = plainBatch(ids, B, T, targets);

    const logitsAndLoss = async (lora: LoraWeights | undefined) => {
      const lg = new Qwen3Graph(gpu, config, weights, { B, T, mode: 'logits', lora });
      lg.setBatch(batch);
      lg.program.run();
      const logits = await gpu.readF32(lg.logits!, B * T * config.vocabSize);
      const hidden = [];
      for (let i = 0; i < config.numLayers; i++) hidden.push(await gpu.readF32(lg.xs[i]!, B * T * config.hiddenSize));
      hidden.push(await gpu.readF32(lg.final, B * T * config.hiddenSize));
      lg.destroy();
      const ll = new Qwen3Graph(gpu, config, weights, { B, T, mode: 'loss', lora });
      ll.setBatch(batch);
      ll.program.run();
      const loss = await ll.readLoss();
      ll.destroy();
      return { logits, hidden, loss };
    };

    const base = await logitsAndLoss(undefined);
    let hiddenMax = 0;
    base.hidden.forEach((h, i) => { hiddenMax = Math.max(hiddenMax, maxAbs(h, ref.readF32(`base_hidden.${i}`))); });
    const result: ParityResult = {
      case: path.basename(path.resolve(dir)),
      logits_max_abs: maxAbs(base.logits, ref.readF32('base_logits')),
      loss_abs: Math.abs(base.loss - ref.readF32('base_loss')[0]!),
      hidden_max_abs: hiddenMax,
      lora_logits_max_abs: null,
      lora_loss_abs: null,
      grad_max_rel: null,
      step1_max_abs: null,
      step1_own_grads_max_abs: null,
      train3_loss_max_rel: null,
      train3_p999_abs: null,
      train3_max_abs: null,
      pref_logps_max_abs: null,
      pref_loss_max_abs: null,
      pref_grad_max_rel: null,
    };

    const adapterDir = path.join(dir, 'adapter');
    if (!fs.existsSync(adapterDir)) return result;
    const lora = loadPeftAdapter(gpu, adapterDir, config);
    try {
      const withLora = await logitsAndLoss(lora);
      result.lora_logits_max_abs = maxAbs(withLora.logits, ref.readF32('lora_logits'));
      result.lora_loss_abs = Math.abs(withLora.loss - ref.readF32('lora_loss')[0]!);

      const tg = new Qwen3Graph(gpu, config, weights, { B, T, mode: 'train', lora, recompute: true });
      tg.setBatch(batch);
      tg.zeroGrads.run();
      tg.program.run();
      let gradRel = 0;
      for (const [name, g] of await readLoraTensors(gpu, lora, 'grads')) {
        gradRel = Math.max(gradRel, maxRel(g, ref.readF32(`grad.${name.replace(/\.weight$/, '.default.weight')}`)));
      }
      tg.destroy();
      result.grad_max_rel = gradRel;

      const caseJson = readJsonFile(path.join(dir, 'case.json')) as { adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number } };
      const hp = caseJson.adamw;
      const refName = (name: string) => name.replace(/\.weight$/, '.default.weight');
      const initial = await readLoraTensors(gpu, lora, 'weights');
      // One AdamW step from the adapter's values with the given gradients (torch did no clipping).
      const adamStep = async () => {
        const opt = adapterAdamW(gpu, lora, { beta1: hp.betas[0], beta2: hp.betas[1], eps: hp.eps, weightDecay: hp.weight_decay, maxGradNorm: 0 });
        const step = new Program(gpu);
        opt.record(step);
        opt.setStep(1, hp.lr);
        step.run();
        const after = await readLoraTensors(gpu, lora, 'weights');
        opt.destroy();
        writeLoraTensors(gpu, lora, initial, 'weights');
        return after;
      };
      // With our gradients: AdamW's first step is lr·g/(|g|+eps), so elements whose gradient is near eps move by
      // an amount set by f32 rounding noise in both engines; compare where |g_ref| > 100·eps.
      const own = await adamStep();
      let ownMax = 0;
      for (const [name, p] of own) {
        const g = ref.readF32(`grad.${refName(name)}`);
        const s1 = ref.readF32(`step1.${refName(name)}`);
        for (let i = 0; i < p.length; i++) if (Math.abs(g[i]!) > 100 * hp.eps) ownMax = Math.max(ownMax, Math.abs(p[i]! - s1[i]!));
      }
      result.step1_own_grads_max_abs = ownMax;
      // With the reference gradients: the optimizer alone, everywhere.
      writeLoraTensors(gpu, lora, new Map([...initial.keys()].map((n) => [n, ref.readF32(`grad.${refName(n)}`)])), 'grads');
      let stepMax = 0;
      for (const [name, p] of await adamStep()) stepMax = Math.max(stepMax, maxAbs(p, ref.readF32(`step1.${refName(name)}`)));
      result.step1_max_abs = stepMax;

      // adamStep left the adapter's values in place: the preference losses and the three steps start from them.
      const prefFile = path.join(dir, 'preference.safetensors');
      if (fs.existsSync(prefFile)) Object.assign(result, await preferenceParity(gpu, prefFile, config, weights, lora, batch.inputIds, targets, T));
      const train3File = path.join(dir, 'train3.safetensors');
      if (fs.existsSync(train3File)) Object.assign(result, await train3Parity(gpu, train3File, config, weights, lora, { ...batch, targets }, B, T));
    } finally {
      releaseLora(gpu, lora);
    }
    return result;
  } finally {
    releaseModelWeights(gpu, weights);
    ref.close();
  }
}
