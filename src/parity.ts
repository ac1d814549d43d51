// Parity against a reference case laid out like shared/fixtures/qwen3/*: model/, adapter/, case.safetensors.
// Works for any Qwen3 shape: every size comes from the files.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Gpu } from './gpu/device.js';
import { Program } from './gpu/program.js';
import { loadModelConfig } from './model/config.js';
import { Checkpoint } from './model/safetensors.js';
import { loadModelWeights, releaseModelWeights } from './model/weights.js';
import { plainBatch, Qwen3Graph, shiftLabels } from './model/qwen3.js';
import { loadPeftAdapter, readLoraTensors, releaseLora, writeLoraTensors, type LoraWeights } from './train/lora.js';
import { AdamW } from './kernels/adamw.js';
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
        const params = lora.layers.flatMap((layer) => Object.values(layer).flatMap((p) => [
          { param: p.A, grad: p.dA, count: lora.settings.rank * p.inDim },
          { param: p.B, grad: p.dB, count: p.outDim * lora.settings.rank },
        ]));
        const opt = new AdamW(gpu, params, { beta1: hp.betas[0], beta2: hp.betas[1], eps: hp.eps, weightDecay: hp.weight_decay, maxGradNorm: 0 });
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
    } finally {
      releaseLora(gpu, lora);
    }
    return result;
  } finally {
    releaseModelWeights(gpu, weights);
    ref.close();
  }
}
