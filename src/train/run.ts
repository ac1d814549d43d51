// A whole LoRA job (any stage) from a TrainConfig: data, model, the step loop with logging, evaluation and
// checkpoints, resume, and the final adapter. Data layout and batch order are in prepare.ts (re-exported).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createGpu, type Gpu } from '../gpu/device.js';
import { loadModelConfig, type ModelConfig } from '../model/config.js';
import { Checkpoint } from '../model/safetensors.js';
import { resolveModelDir } from '../model/hub.js';
import { loadModelWeights, releaseModelWeights, type MatrixQuantizer, type ModelWeights } from '../model/weights.js';
import { readGguf } from '../model/gguf-format.js';
import { ggufModelConfig, loadGgufWeights } from '../model/gguf-model.js';
import { resolveGgufFile } from '../model/gguf-source.js';
import { tokenizerFilesFromGguf } from '../model/gguf-tokenizer.js';
import { familyOf, modelTensors } from '../model/families.js';
import type { MatrixDType } from '../gpu/matrix.js';
import { fileSource } from '../model/safetensors.js';
import { Tokenizer } from '../model/tokenizer.js';
import { fileError, UserError } from '../errors.js';
import { stepInterval, type TrainConfig } from './config.js';
import { loadDatasets, loadDocuments, loadKtoRecords, loadPreferencePairs } from './dataset.js';
import { layoutKto, layoutPairs } from './preference-data.js';
import { initLora, loadPeftAdapter, releaseLora, savePeftAdapter, writeTrainingTemplate, type LoraWeights } from './lora.js';
import { LoraTrainer, type PreferenceObjective } from './trainer.js';
import { learningRate } from './schedule.js';
import { layoutData, layoutDocuments, microBatch, planSteps, valBatches, type PreparedData } from './prepare.js';
import { latestCheckpoint, loadCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.js';
import { TrainLogger } from './logger.js';
import { trainSteps, type LogEntry, type LoopPlan } from './loop.js';
import { checkMemory, chooseKeepAttention, chooseRecompute, estimateTrainingMemory, type MemoryEstimate } from './memory-plan.js';
import { tuneForJob } from './kernel-tuning.js';
import { fileTuningStore } from './tuning-cache.js';

export * from './prepare.js';

/** Tokenize, split and lay out the dataset(s) of a config. */
export function prepareData(cfg: TrainConfig, tokenizer: Tokenizer, model: ModelConfig): PreparedData {
  const options = (ds: string) => ({ dataset: ds, dataset_dir: cfg.dataset_dir, max_samples: cfg.max_samples });
  if (cfg.cutoff_len > model.maxPositionEmbeddings) {
    throw new UserError(`cutoff_len ${cfg.cutoff_len} is beyond the model's context of ${model.maxPositionEmbeddings} tokens`);
  }
  const evalSet = <T>(load: (o: ReturnType<typeof options>) => T) => (cfg.eval_dataset ? load(options(cfg.eval_dataset)) : undefined);
  if (cfg.stage === 'pt') return layoutDocuments(loadDocuments(options(cfg.dataset)), evalSet(loadDocuments), cfg, tokenizer, model);
  if (cfg.stage === 'dpo') return layoutPairs(loadPreferencePairs(options(cfg.dataset)), evalSet(loadPreferencePairs), cfg, tokenizer, model);
  if (cfg.stage === 'kto') return layoutKto(loadKtoRecords(options(cfg.dataset)), evalSet(loadKtoRecords), cfg, tokenizer, model);
  return layoutData(loadDatasets(options(cfg.dataset)), evalSet(loadDatasets), cfg, tokenizer, model);
}

/** The preference objective of stages dpo and kto (undefined for SFT). */
export function preferenceObjective(cfg: TrainConfig): PreferenceObjective | undefined {
  if (cfg.stage !== 'dpo' && cfg.stage !== 'kto') return undefined;
  return {
    kind: cfg.stage === 'kto' ? 'kto' : cfg.pref_loss, beta: cfg.pref_beta, ftx: cfg.pref_ftx, gamma: cfg.simpo_gamma,
    chosenWeight: cfg.kto_chosen_weight, rejectedWeight: cfg.kto_rejected_weight,
  };
}

export interface LoadedModel {
  gpu: Gpu;
  config: ModelConfig;
  weights: ModelWeights;
  tokenizer: Tokenizer;
}

/** What loading may add: quantizing an HF base's matrices while they are uploaded (quantization_bit). */
export interface LoadOptions {
  quantizer?: (config: ModelConfig) => MatrixQuantizer;
}

/**
 * Load the base: a .gguf file, a folder holding one, or an Ollama name (kept in the file's types on the GPU), else
 * a local HF folder or hub id.
 */
export async function loadModel(dir: string, bf16: boolean, gpu?: Gpu, o: LoadOptions = {}): Promise<LoadedModel> {
  const ggufFile = resolveGgufFile(dir);
  if (ggufFile) {
    if (o.quantizer) throw new UserError(`quantization_bit: ${ggufFile} is a GGUF base, already quantized as it is stored (unset quantization_bit)`);
    return loadGgufModel(ggufFile, bf16, gpu);
  }
  dir = await resolveModelDir(dir);
  if (!fs.existsSync(dir)) throw new UserError(`model_name_or_path: ${dir} does not exist (a local Hugging Face model folder)`);
  const config = loadModelConfig(dir);
  const tokenizer = await Tokenizer.load(dir);
  // Ids past the embedding table would be read out of bounds on the GPU: refuse a tokenizer of another model.
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new UserError(`${tokenizer.source}: the tokenizer has ${tokenizer.vocabSize} token ids but ${path.join(dir, 'config.json')} has vocab_size ${config.vocabSize} (tokenizer.json missing from ${dir}, or from another model)`);
  }
  const g = gpu ?? (await createGpu());
  try {
    const ckpt = Checkpoint.open(dir);
    try {
      return { gpu: g, config, weights: loadModelWeights(g, ckpt, config, bf16 ? 'bf16' : 'f32', o.quantizer?.(config)), tokenizer };
    } finally {
      ckpt.close();
    }
  } catch (e) {
    if (!gpu) await g.destroy();
    throw e;
  }
}

async function loadGgufModel(file: string, bf16: boolean, gpu?: Gpu): Promise<LoadedModel> {
  const source = fileSource(file);
  try {
    const f = readGguf(source, file);
    const config = ggufModelConfig(f);
    const files = tokenizerFilesFromGguf(f);
    const tokenizer = Tokenizer.fromParsed(files.json, files.config, file);
    if (tokenizer.vocabSize > config.vocabSize) throw fileError(file, `the tokenizer has ${tokenizer.vocabSize} token ids but token_embd has ${config.vocabSize} rows`);
    const g = gpu ?? (await createGpu());
    try {
      return { gpu: g, config, weights: loadGgufWeights(g, f, config, bf16 ? 'bf16' : 'f32'), tokenizer };
    } catch (e) {
      if (!gpu) await g.destroy();
      throw e;
    }
  } finally {
    source.close?.();
  }
}

/** Each base matrix's stored dtype by HF name (a GGUF base or quantization_bit mixes them). */
function matrixDtypes(config: ModelConfig, w: ModelWeights): Map<string, MatrixDType> {
  const out = new Map<string, MatrixDType>();
  for (const t of modelTensors(config)) {
    if (t.kind !== 'matrix') continue;
    const m = t.projection ? w.layers[t.layer!]!.proj[t.projection] : t.hf === familyOf(config).embed.hf ? w.embed : w.lmHead;
    out.set(t.hf, m.dtype);
  }
  return out;
}

export interface RunHooks {
  /** Called at every logging step (progress bars, the browser demo). */
  onLog?(entry: LogEntry): void;
  onStep?(step: number, total: number): void;
}

export interface RunResult {
  finalLoss: number;
  firstLoss: number;
  steps: number;
  log: LogEntry[];
  lora: LoraWeights;
}

const STALE_CHECKPOINT = /^checkpoint-\d+\.tmp-\d+$/;

/** Prepare the output folder: refuse to clobber a previous run unless asked. */
function prepareOutputDir(cfg: TrainConfig): void {
  const dir = cfg.output_dir;
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0 && !cfg.overwrite_output_dir && !cfg.resume_from_checkpoint) {
    throw new UserError(`output_dir ${dir} already exists and is not empty: set overwrite_output_dir: true, or resume_from_checkpoint`);
  }
  if (fs.existsSync(dir) && cfg.overwrite_output_dir && !cfg.resume_from_checkpoint) {
    for (const entry of fs.readdirSync(dir)) if (/^checkpoint-\d+$/.test(entry) || entry === 'trainer_log.jsonl') fs.rmSync(path.join(dir, entry), { recursive: true, force: true });
  }
  // Temporary folders of checkpoints whose writer was killed: never complete, never read; remove them.
  if (fs.existsSync(dir)) for (const entry of fs.readdirSync(dir)) if (STALE_CHECKPOINT.test(entry)) fs.rmSync(path.join(dir, entry), { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
}

function resolveResume(cfg: TrainConfig): string | undefined {
  const r = cfg.resume_from_checkpoint;
  if (!r || r === 'false') return undefined;
  if (r === 'true' || r === 'last') {
    const last = latestCheckpoint(cfg.output_dir);
    if (!last) throw new UserError(`resume_from_checkpoint: no complete checkpoint-N folder in ${cfg.output_dir}`);
    return last;
  }
  if (!fs.existsSync(r)) throw fileError(r, 'checkpoint folder not found');
  return r;
}

/** Train with an already loaded model. The caller owns the model and the returned adapter. */
export async function runTraining(cfg: TrainConfig, model: LoadedModel, hooks: RunHooks = {}): Promise<RunResult> {
  const { gpu, config, weights, tokenizer } = model;
  const data = prepareData(cfg, tokenizer, config);
  const plan = planSteps(cfg, data);
  prepareOutputDir(cfg);
  const resumeDir = resolveResume(cfg);
  const settings = { rank: cfg.lora_rank, alpha: cfg.lora_alpha, rslora: cfg.use_rslora, dropout: cfg.lora_dropout, targets: cfg.lora_target };
  const trainingTemplate = { template: cfg.template, enable_thinking: cfg.enable_thinking };
  const weightDtype = weights.embed.dtype;
  const dtypes = matrixDtypes(config, weights);
  const preference = preferenceObjective(cfg);
  // Preference stages: two rows (chosen / rejected, example / KL) per example.
  const rows = (preference ? 2 : 1) * cfg.per_device_train_batch_size;
  // Each plan is a dry run of the whole job: made once per (recompute, keepAttention).
  const plans = new Map<string, MemoryEstimate>();
  const planFor = (recompute: boolean, keepAttention = false): MemoryEstimate => {
    const key = `${recompute} ${keepAttention}`;
    if (!plans.has(key)) plans.set(key, estimateTrainingMemory(config, { B: rows, T: data.T, preference: preference?.kind, rank: settings.rank, targets: settings.targets, recompute, keepAttention, weightDtype, matrixDtype: (name) => dtypes.get(name) ?? weightDtype, maxBindingBytes: gpu.maxBindingBytes, dropout: cfg.lora_dropout }));
    return plans.get(key)!;
  };
  const recompute = chooseRecompute(cfg.disable_gradient_checkpointing, planFor, gpu);
  const keepAttention = chooseKeepAttention(recompute, (keep) => planFor(recompute, keep));
  const memory = planFor(recompute, keepAttention);
  checkMemory(memory, gpu, { recompute, weightDtype });
  let lora: LoraWeights;
  if (resumeDir) lora = loadPeftAdapter(gpu, resumeDir, config);
  else if (cfg.adapter_name_or_path) lora = loadPeftAdapter(gpu, cfg.adapter_name_or_path, config);
  else lora = initLora(gpu, config, settings, cfg.seed);
  // A loaded adapter brings its own lora_dropout (as PEFT's is_trainable load does); the config's is checked already.
  const adapterDir = resumeDir ?? cfg.adapter_name_or_path;
  if (adapterDir && !(lora.settings.dropout >= 0 && lora.settings.dropout < 1)) {
    releaseLora(gpu, lora);
    throw fileError(path.join(adapterDir, 'adapter_config.json'), `lora_dropout ${lora.settings.dropout} is outside [0, 1)`);
  }

  // Kernel variants for this GPU at this job's shapes (cached after the first job; before recording the step).
  await tuneForJob(gpu, config, rows * data.T, weightDtype, { enabled: cfg.kernel_tuning, matrix: cfg.subgroup_matrix, store: fileTuningStore() });
  const trainer = new LoraTrainer(gpu, config, weights, lora, {
    B: rows,
    T: data.T,
    recompute,
    keepAttention,
    seed: cfg.seed,
    preference,
    microPerStep: plan.microPerStep,
    hyper: { beta1: cfg.adam_beta1, beta2: cfg.adam_beta2, eps: cfg.adam_epsilon, weightDecay: cfg.weight_decay, maxGradNorm: cfg.max_grad_norm },
  });
  const logger = new TrainLogger(cfg.output_dir, plan.totalSteps);
  let state: TrainerState = { global_step: 0, log_history: [] };
  if (resumeDir) {
    const saved = loadCheckpoint(resumeDir);
    state = saved.state;
    trainer.loadOptimizerState(saved.optimizer);
    logger.restore(state.log_history);
  }
  const stepsPerEpoch = Math.max(1, Math.floor(plan.perEpoch / plan.microPerStep));
  const logEvery = stepInterval(cfg.logging_steps, plan.totalSteps);
  const evalOn = data.val.length > 0 && cfg.eval_strategy !== 'no';
  const schedule = { type: cfg.lr_scheduler_type, baseLr: cfg.learning_rate, warmupSteps: plan.warmup, totalSteps: plan.totalSteps };
  const B = cfg.per_device_train_batch_size;
  const loopPlan: LoopPlan = {
    totalSteps: plan.totalSteps, microPerStep: plan.microPerStep, perEpoch: plan.perEpoch, logEvery,
    microBatch: (m) => microBatch(data, B, cfg.seed, m),
    learningRate: (step) => learningRate(step, schedule),
    saveEvery: stepInterval(cfg.save_steps, plan.totalSteps),
    evalEvery: cfg.eval_strategy === 'epoch' ? stepsPerEpoch : cfg.eval_steps !== undefined ? stepInterval(cfg.eval_steps, plan.totalSteps) : logEvery,
    evaluate: evalOn ? () => trainer.evaluate(valBatches(data, cfg.per_device_eval_batch_size), (preference ? 2 : 1) * cfg.per_device_eval_batch_size) : undefined,
  };
  // A lost device (driver reset, out of memory, removal) fails every later GPU call: stop and say where the last
  // checkpoint is, instead of a stack trace from whichever call noticed first.
  let lost: GPUDeviceLostInfo | undefined;
  void gpu.device.lost.then((info) => (lost = info));
  const lostError = (info: GPUDeviceLostInfo) => {
    const last = latestCheckpoint(cfg.output_dir);
    return new UserError(`the GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ''}); ${last ? `the last checkpoint is ${last}: resume with resume_from_checkpoint: true` : 'no checkpoint had been saved yet'}`);
  };
  try {
    await trainSteps(trainer, loopPlan, {
      check: () => { if (lost) throw lostError(lost); },
      onStep: hooks.onStep,
      onLog: (entry) => {
        logger.log(entry);
        hooks.onLog?.(entry);
      },
      save: async (done) => {
        const checkpoint = path.join(cfg.output_dir, `checkpoint-${done}`);
        await saveCheckpoint(gpu, checkpoint, lora, await trainer.optimizerState(), { global_step: done, log_history: logger.entries }, cfg.model_name_or_path);
        writeTrainingTemplate(checkpoint, trainingTemplate);
      },
    }, state.global_step);
    await savePeftAdapter(gpu, lora, cfg.output_dir, cfg.model_name_or_path);
    // The exporter serves the model with the template it was trained with.
    writeTrainingTemplate(cfg.output_dir, trainingTemplate);
    logger.finish(cfg.plot_loss);
    const log = logger.entries;
    return { finalLoss: log.at(-1)?.loss ?? NaN, firstLoss: log[0]?.loss ?? NaN, steps: plan.totalSteps, log, lora };
  } catch (e) {
    releaseLora(gpu, lora);
    // The failing call may be noticed before the lost promise settles: give it a moment.
    const info = lost ?? (e instanceof UserError ? undefined : await Promise.race([gpu.device.lost, new Promise<undefined>((r) => setTimeout(r, 200))]));
    throw info ? lostError(info) : e;
  } finally {
    trainer.destroy();
  }
}

/** The train command's job: load, train, free. */
export async function trainFromConfig(cfg: TrainConfig, hooks: RunHooks = {}, load: LoadOptions = {}): Promise<RunResult> {
  const model = await loadModel(cfg.model_name_or_path, cfg.bf16, undefined, load);
  let result: RunResult;
  try {
    result = await runTraining(cfg, model, hooks);
  } finally {
    releaseModelWeights(model.gpu, model.weights);
    await model.gpu.destroy();
  }
  return result;
}
