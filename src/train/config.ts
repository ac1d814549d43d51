// The configuration of training and export: LLaMA-Factory's YAML keys for LoRA SFT and for export, with their
// names, meanings and defaults specified once here, read from a YAML file and `--key value` / `--key=value` /
// `key=value` command-line overrides (later ones win). `loadTrainConfig` reads all of them (a training YAML may
// ask for an export at the end); `loadExportConfig` reads the export keys and leaves the training ones alone.
// Keys that LLaMA-Factory has but that do nothing here, and unknown keys, give warnings; keys that would change
// what is trained and are not supported, and wrong values, give a UserError naming the file and the key.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { UserError, fileError } from '../errors.js';
import { EXPORT_FORMATS, GGUF_PRESETS, type ExportFormat, type ExportOptions, type GgufPreset } from './export-options.js';
import type { TemplateName } from './template.js';
import { PREF_LOSSES, type PrefLoss } from './preference.js';
import { PROJECTIONS, type Projection } from '../model/family.js';
import { LoraTargetError, parseLoraTargets } from '../model/families.js';

export const LR_SCHEDULERS = ['linear', 'cosine', 'constant', 'constant_with_warmup'] as const;
export type LrSchedulerType = (typeof LR_SCHEDULERS)[number];

export const TRAIN_STAGES = ['sft', 'pt', 'dpo', 'kto'] as const;
export type TrainStage = (typeof TRAIN_STAGES)[number];

export type EvalStrategy = 'no' | 'steps' | 'epoch';

export interface TrainConfig {
  // model
  model_name_or_path: string;
  adapter_name_or_path: string | undefined;
  trust_remote_code: boolean;
  // method
  stage: TrainStage;
  do_train: boolean;
  finetuning_type: 'lora';
  lora_rank: number;
  lora_alpha: number;
  lora_dropout: number;
  lora_target: Projection[];
  use_rslora: boolean;
  // preference stages
  pref_beta: number;
  pref_ftx: number;
  pref_loss: PrefLoss;
  simpo_gamma: number;
  kto_chosen_weight: number;
  kto_rejected_weight: number;
  // dataset
  dataset: string;
  eval_dataset: string | undefined;
  dataset_dir: string;
  template: TemplateName;
  enable_thinking: boolean;
  cutoff_len: number;
  max_samples: number | undefined;
  val_size: number;
  train_on_prompt: boolean;
  packing: boolean;
  neat_packing: boolean;
  preprocessing_batch_size: number;
  overwrite_cache: boolean;
  preprocessing_num_workers: number | undefined;
  dataloader_num_workers: number;
  // output
  output_dir: string;
  overwrite_output_dir: boolean;
  logging_steps: number;
  save_steps: number;
  save_only_model: boolean;
  plot_loss: boolean;
  report_to: string;
  // train
  per_device_train_batch_size: number;
  gradient_accumulation_steps: number;
  learning_rate: number;
  num_train_epochs: number;
  max_steps: number;
  lr_scheduler_type: LrSchedulerType;
  warmup_ratio: number;
  warmup_steps: number;
  weight_decay: number;
  max_grad_norm: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_epsilon: number;
  seed: number;
  bf16: boolean;
  quantization_bit: 4 | 8 | undefined;
  /** Unset: chosen from the memory plan (chooseRecompute). */
  disable_gradient_checkpointing: boolean | undefined;
  kernel_tuning: boolean;
  subgroup_matrix: boolean;
  resume_from_checkpoint: string | undefined;
  ddp_timeout: number;
  // eval
  per_device_eval_batch_size: number;
  eval_strategy: EvalStrategy;
  eval_steps: number | undefined;
  // export (for the exporter)
  export_dir: string | undefined;
  export_format: ExportFormat;
  export_quantization: GgufPreset;
  export_size: number;
}

/** A value that is wrong for its key: the message completes "<key> ...". */
class ValueProblem extends Error {}

type Parser<V> = (raw: unknown) => V;

interface KeySpec<V> {
  description: string;
  parse: Parser<V>;
  /** Used when the key is absent or null; undefined = no default (see REQUIRED_KEYS and resolveDefaults). */
  default: V | undefined;
}

function describeValue(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (Array.isArray(v)) return `a list`;
  if (typeof v === 'object' && v !== null) return 'a mapping';
  return String(v);
}

const str: Parser<string> = (raw) => {
  if (typeof raw === 'string') return raw;
  if (typeof raw === 'number') return String(raw);
  throw new ValueProblem('must be a string');
};

const bool: Parser<boolean> = (raw) => {
  if (typeof raw === 'boolean') return raw;
  if (typeof raw === 'string' && /^(true|false)$/i.test(raw.trim())) return raw.trim().toLowerCase() === 'true';
  throw new ValueProblem('must be true or false');
};

/** Numbers from YAML, and numeric strings (command line values, or "1e-4" quoted in YAML). */
function toNumber(raw: unknown): number | undefined {
  if (typeof raw === 'number') return raw;
  if (typeof raw === 'string' && raw.trim() !== '') {
    const n = Number(raw.trim());
    return Number.isNaN(n) ? undefined : n;
  }
  return undefined;
}

function number(check: (n: number) => boolean, what: string): Parser<number> {
  return (raw) => {
    const n = toNumber(raw);
    if (n === undefined || !Number.isFinite(n) || !check(n)) throw new ValueProblem(`must be ${what}`);
    return n;
  };
}

const positive = number((n) => n > 0, 'a positive number');
const nonNegative = number((n) => n >= 0, 'a number >= 0');
const positiveInt = number((n) => Number.isInteger(n) && n > 0, 'a positive integer');
const nonNegativeInt = number((n) => Number.isInteger(n) && n >= 0, 'an integer >= 0');
const fraction = number((n) => n >= 0 && n < 1, 'a number in [0, 1)');
/** HF's logging/save/eval steps: a step count, or a fraction (< 1) of the total steps. */
const steps = number((n) => n > 0 && (n < 1 || Number.isInteger(n)), 'a positive integer, or a fraction in (0, 1) of the total steps');

const quantizationBit: Parser<4 | 8 | undefined> = (raw) => {
  if (raw === null || raw === undefined) return undefined;
  const n = toNumber(raw);
  if (n === 4 || n === 8) return n;
  throw new ValueProblem('must be 4 or 8 (or unset)');
};

function oneOf<V extends string>(values: readonly V[]): Parser<V> {
  return (raw) => {
    if (typeof raw === 'string' && (values as readonly string[]).includes(raw)) return raw as V;
    throw new ValueProblem(`must be one of ${values.join(', ')}`);
  };
}

/** 'all', or LoRA module names as a comma list or a YAML list; kept in model order, without duplicates. */
const loraTarget: Parser<Projection[]> = (raw) => {
  const names = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw : undefined;
  if (names === undefined || (Array.isArray(names) && !names.every((n) => typeof n === 'string'))) throw new ValueProblem(`must be 'all' or a comma list of ${PROJECTIONS.join(', ')}`);
  try {
    return parseLoraTargets(names as string | string[]);
  } catch (e) {
    if (e instanceof LoraTargetError) throw new ValueProblem(e.problem);
    throw e;
  }
};

/** Comma-separated dataset names, or a YAML list of them. */
const datasetList: Parser<string> = (raw) => {
  const names = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : undefined;
  if (!names || !names.every((n) => typeof n === 'string')) throw new ValueProblem('must be a comma-separated list of dataset names or files');
  const trimmed = names.map((n: string) => n.trim()).filter((n) => n !== '');
  if (trimmed.length === 0) throw new ValueProblem('must name at least one dataset');
  return trimmed.join(',');
};

/** val_size: a fraction in [0, 1) or a sample count > 1 (LLaMA-Factory's rule). */
const valSize = number((n) => n >= 0 && n !== 1 && (n < 1 || Number.isInteger(n)), 'a fraction in [0, 1) or a sample count > 1');

/** HF reads -1 as "from num_train_epochs". */
const maxSteps = number((n) => Number.isInteger(n) && (n === -1 || n > 0), '-1 (use num_train_epochs) or a positive integer');

const reportTo: Parser<string> = (raw) => (Array.isArray(raw) ? raw.map(String).join(',') : str(raw));

const SPEC: { [K in keyof TrainConfig]-?: KeySpec<TrainConfig[K]> } = {
  model_name_or_path: { description: 'Base model: a local HF folder (config.json, *.safetensors, tokenizer.json) or a hub id.', parse: str, default: undefined },
  adapter_name_or_path: { description: 'A PEFT LoRA adapter folder to start from.', parse: str, default: undefined },
  trust_remote_code: { description: 'Accepted for compatibility; no effect (no model code is run).', parse: bool, default: false },
  stage: { description: "Training stage: 'sft' (supervised fine-tuning), 'pt' (continued pretraining on a text column: every token trained, documents packed into cutoff_len blocks), 'dpo' (preference pairs: pref_loss) or 'kto' (answers labelled desirable or not).", parse: oneOf(TRAIN_STAGES), default: 'sft' },
  do_train: { description: 'Train (true).', parse: bool, default: true },
  finetuning_type: { description: "Only 'lora'.", parse: oneOf(['lora'] as const), default: 'lora' },
  lora_rank: { description: 'LoRA rank r.', parse: positiveInt, default: 8 },
  lora_alpha: { description: 'LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with use_rslora). Default 2 x lora_rank.', parse: positive, default: undefined },
  lora_dropout: { description: 'Dropout on the LoRA input, in [0, 1).', parse: fraction, default: 0 },
  lora_target: { description: `Modules with LoRA: 'all' (= ${PROJECTIONS.join(',')}) or a comma list of them.`, parse: loraTarget, default: [...PROJECTIONS] },
  use_rslora: { description: 'Rank-stabilised LoRA: scale alpha/sqrt(r) instead of alpha/r.', parse: bool, default: false },
  pref_beta: { description: 'stage dpo / kto: beta of the preference loss (the reward scale).', parse: positive, default: 0.1 },
  pref_ftx: { description: 'stage dpo / kto: weight of the SFT loss (mean log-prob of the chosen answer) added to the preference loss.', parse: nonNegative, default: 0 },
  pref_loss: { description: `stage dpo: ${PREF_LOSSES.join(', ')} (ipo, orpo and simpo on per-token means; orpo and simpo without a reference).`, parse: oneOf(PREF_LOSSES), default: 'sigmoid' },
  simpo_gamma: { description: "pref_loss simpo: the target reward margin gamma.", parse: nonNegative, default: 0.5 },
  kto_chosen_weight: { description: 'stage kto: weight of the desirable examples\' loss.', parse: positive, default: 1 },
  kto_rejected_weight: { description: 'stage kto: weight of the undesirable examples\' loss.', parse: positive, default: 1 },
  dataset: { description: 'Comma-separated datasets: names registered in dataset_dir/dataset_info.json, or .json/.jsonl files.', parse: datasetList, default: undefined },
  eval_dataset: { description: 'Comma-separated validation datasets (instead of val_size).', parse: datasetList, default: undefined },
  dataset_dir: { description: 'Folder holding dataset_info.json and the dataset files.', parse: str, default: 'data' },
  template: { description: "Chat template: 'qwen3' (thinking model) or 'qwen3_nothink'.", parse: oneOf(['qwen3', 'qwen3_nothink'] as const), default: 'qwen3' },
  enable_thinking: { description: 'qwen3 template: train the empty <think> block added to answers without one (true), or put it in the masked prompt and drop thoughts (false).', parse: bool, default: true },
  cutoff_len: { description: 'Maximum tokens per sample (and per packed row).', parse: positiveInt, default: 2048 },
  max_samples: { description: 'Use at most this many records of each dataset.', parse: positiveInt, default: undefined },
  val_size: { description: 'Validation split: a fraction in [0, 1) or a sample count.', parse: valSize, default: 0 },
  train_on_prompt: { description: 'Also train on prompt tokens (system and user).', parse: bool, default: false },
  packing: { description: 'Pack several samples into each cutoff_len row (attention crosses samples). Default: false, true for stage pt (its documents concatenated and cut into cutoff_len blocks).', parse: bool, default: false },
  neat_packing: { description: 'Pack without cross-attention: samples in a row cannot see each other; positions restart. Implies packing.', parse: bool, default: false },
  preprocessing_batch_size: { description: 'stage pt with packing: documents are concatenated and cut into blocks in groups of this many (the tail of each group that fills no block is dropped), as LLaMA-Factory does.', parse: positiveInt, default: 1000 },
  overwrite_cache: { description: 'Accepted for compatibility; no effect (nothing is cached).', parse: bool, default: false },
  preprocessing_num_workers: { description: 'Accepted for compatibility; no effect.', parse: positiveInt, default: undefined },
  dataloader_num_workers: { description: 'Accepted for compatibility; no effect.', parse: nonNegativeInt, default: 0 },
  output_dir: { description: 'Where checkpoints and the adapter are written.', parse: str, default: 'trainer_output' },
  overwrite_output_dir: { description: 'Allow writing into a non-empty output_dir.', parse: bool, default: false },
  logging_steps: { description: 'Log every N optimizer steps (a value < 1 is a fraction of the total steps).', parse: steps, default: 10 },
  save_steps: { description: 'Save a checkpoint every N optimizer steps (a value < 1 is a fraction of the total steps).', parse: steps, default: 500 },
  save_only_model: { description: 'Checkpoints hold the adapter only, not the optimizer state (they cannot be resumed).', parse: bool, default: false },
  plot_loss: { description: 'Write a loss curve to output_dir at the end.', parse: bool, default: false },
  report_to: { description: "Accepted for compatibility; only 'none' (logs go to the console and output_dir).", parse: reportTo, default: 'none' },
  per_device_train_batch_size: { description: 'Rows per micro-batch.', parse: positiveInt, default: 1 },
  gradient_accumulation_steps: { description: 'Micro-batches per optimizer step.', parse: positiveInt, default: 8 },
  learning_rate: { description: 'Peak learning rate of AdamW.', parse: positive, default: 1e-4 },
  num_train_epochs: { description: 'Epochs (may be fractional); used when max_steps is -1.', parse: positive, default: 3 },
  max_steps: { description: 'Total optimizer steps; -1 = from num_train_epochs.', parse: maxSteps, default: -1 },
  lr_scheduler_type: { description: `Learning-rate schedule after warmup: ${LR_SCHEDULERS.join(', ')}.`, parse: oneOf(LR_SCHEDULERS), default: 'cosine' },
  warmup_ratio: { description: 'Linear warmup over this fraction of the total steps.', parse: fraction, default: 0 },
  warmup_steps: { description: 'Linear warmup steps (wins over warmup_ratio when > 0).', parse: nonNegativeInt, default: 0 },
  weight_decay: { description: 'AdamW decoupled weight decay.', parse: nonNegative, default: 0 },
  max_grad_norm: { description: 'Clip the global gradient norm to this (0 = no clipping).', parse: nonNegative, default: 1 },
  adam_beta1: { description: 'AdamW beta1.', parse: fraction, default: 0.9 },
  adam_beta2: { description: 'AdamW beta2.', parse: fraction, default: 0.999 },
  adam_epsilon: { description: 'AdamW epsilon.', parse: positive, default: 1e-8 },
  seed: { description: 'Seed of LoRA initialisation, shuffling, dropout and the validation split.', parse: nonNegativeInt, default: 42 },
  bf16: { description: 'Keep the base weights in bfloat16 (LoRA weights and optimizer state stay float32).', parse: bool, default: false },
  quantization_bit: { description: "Quantize an HF base while uploading it and keep it quantized on the GPU (QLoRA without bitsandbytes): 8 = Q8_0, 4 = llama.cpp's q4_k_m mix (Q4_K, Q6_K where q4_k_m puts it). A GGUF base keeps its own types.", parse: quantizationBit, default: undefined },
  disable_gradient_checkpointing: { description: 'Keep all activations instead of recomputing them in the backward pass (faster, more memory). Unset: kept when the memory plan without recomputation fits LORAFORGE_GPU_MEMORY_BYTES, recomputed otherwise.', parse: bool, default: undefined },
  kernel_tuning: { description: "loraforge: time the matmul kernel variants once per GPU and driver at the model's shapes and use the fastest (cached in the user's cache folder; `loraforge tune` redoes it); false: the built-in choice.", parse: bool, default: true },
  subgroup_matrix: { description: 'loraforge: run the projection matmuls on subgroup matrices (f16 inputs, f32 sums) where the GPU offers them and a self-check against f32 passes (cached with the tuning); false: always f32.', parse: bool, default: true },
  resume_from_checkpoint: { description: 'A checkpoint folder to resume from, or true for the latest in output_dir.', parse: (raw) => (typeof raw === 'boolean' ? String(raw) : str(raw)), default: undefined },
  ddp_timeout: { description: 'Accepted for compatibility; no effect (single device).', parse: nonNegativeInt, default: 1800 },
  per_device_eval_batch_size: { description: 'Rows per validation batch.', parse: positiveInt, default: 1 },
  eval_strategy: { description: "When to evaluate: 'no', 'steps' (every eval_steps) or 'epoch'.", parse: oneOf(['no', 'steps', 'epoch'] as const), default: 'no' },
  eval_steps: { description: 'Evaluate every N optimizer steps (default: logging_steps).', parse: steps, default: undefined },
  export_dir: { description: 'Where the exporter writes the merged model / GGUF (in a training YAML: export after training).', parse: str, default: undefined },
  export_format: { description: `Export format: ${EXPORT_FORMATS.join(', ')} (a LoRA adapter alone as GGUF).`, parse: oneOf(EXPORT_FORMATS), default: 'gguf' },
  export_quantization: {
    description: `GGUF quantization preset: ${GGUF_PRESETS.join(', ')} (any case).`,
    parse: (raw) => oneOf(GGUF_PRESETS)(typeof raw === 'string' ? raw.toLowerCase() : raw),
    default: 'q8_0',
  },
  export_size: { description: 'Largest shard of a safetensors export, GB.', parse: positive, default: 5 },
};

/** One line per supported key, for the README and --help. */
export const SUPPORTED_KEYS: Readonly<Record<keyof TrainConfig, string>> = Object.fromEntries(
  Object.entries(SPEC).map(([key, spec]) => [key, spec.description]),
) as Record<keyof TrainConfig, string>;

const REQUIRED_KEYS: (keyof TrainConfig)[] = ['model_name_or_path', 'dataset'];

/** Supported keys that have no effect here: setting them gives a warning. */
const NO_EFFECT_KEYS: (keyof TrainConfig)[] = ['trust_remote_code', 'overwrite_cache', 'preprocessing_num_workers', 'dataloader_num_workers', 'ddp_timeout', 'report_to'];

/** LLaMA-Factory / HF keys that are accepted and ignored (speed, logging, distributed or hub settings). */
const IGNORED_KEYS = new Set([
  'deepspeed', 'fsdp', 'fsdp_config', 'flash_attn', 'fp16', 'tf32', 'optim', 'torch_compile', 'enable_liger_kernel', 'use_unsloth',
  'ddp_find_unused_parameters', 'ddp_backend', 'ddp_broadcast_buffers', 'gradient_checkpointing', 'save_strategy', 'save_total_limit',
  'save_safetensors', 'logging_dir', 'logging_strategy', 'logging_first_step', 'run_name', 'push_to_hub', 'hub_model_id', 'hub_token',
  'hf_hub_token', 'cache_dir', 'tokenized_path', 'buffer_size', 'use_fast_tokenizer', 'upcast_layernorm',
  'infer_backend', 'include_num_input_tokens_seen', 'dataloader_pin_memory', 'remove_unused_columns', 'print_param_status',
  'predict_with_generate', 'do_eval', 'do_predict', 'low_cpu_mem_usage', 'ignore_pad_token_for_loss', 'group_by_length',
  'disable_tqdm', 'use_cache', 'model_revision', 'export_device', 'export_legacy_format', 'export_hub_model_id',
]);

/** LLaMA-Factory keys that would change what is trained and are not supported: an error unless unset/off. */
const UNSUPPORTED_KEYS: Record<string, string> = {
  mask_history: 'training on the last turn only is not supported',
  use_dora: 'DoRA is not supported',
  pissa_init: 'PiSSA initialisation is not supported',
  loraplus_lr_ratio: 'LoRA+ is not supported',
  additional_target: 'extra trainable modules are not supported',
  create_new_adapter: 'stacking a new adapter on adapter_name_or_path is not supported',
  streaming: 'dataset streaming is not supported',
  rope_scaling: 'RoPE scaling is not supported',
  neftune_noise_alpha: 'NEFTune is not supported',
  use_galore: 'GaLore is not supported',
  use_badam: 'BAdam is not supported',
  use_apollo: 'APOLLO is not supported',
  tool_format: "the qwen3 templates' own tool format is always used (LLaMA-Factory's tool_format also ends calls without the newline): unset it",
  default_system: 'a default system prompt is not supported: put the system prompt in the data',
  interleave_probs: "only mix_strategy 'concat' is supported",
  mix_strategy: "only mix_strategy 'concat' is supported",
};
/** Values of unsupported keys that mean "off". */
const OFF_VALUES: Record<string, unknown[]> = { mix_strategy: ['concat'] };

const isOff = (key: string, v: unknown): boolean =>
  v === null || v === undefined || v === false || v === 0 || v === '' || v === 'false' || v === 'none' || (OFF_VALUES[key] ?? []).includes(v);

/** A raw value with where it came from. */
interface Setting {
  raw: unknown;
  source: string;
}

/** LLaMA-Factory's `llamafactory-cli train cfg.yaml key=value` override form. */
const KEY_EQUALS_VALUE = /^[A-Za-z_][\w-]*=/;

/**
 * Command-line arguments: [config.yaml] then `--key value`, `--key=value`, `key=value`, or `--flag` (= true when
 * followed by nothing, another option or a key=value override).
 */
function parseArgv(argv: string[]): { path: string | undefined; overrides: [string, string][] } {
  let path: string | undefined;
  const overrides: [string, string][] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const key = (eq >= 0 ? arg.slice(2, eq) : arg.slice(2)).replaceAll('-', '_');
      if (key === '') throw new UserError(`command line: bad option '${arg}'`);
      if (eq >= 0) overrides.push([key, arg.slice(eq + 1)]);
      else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--') && !KEY_EQUALS_VALUE.test(argv[i + 1]!)) overrides.push([key, argv[++i]!]);
      else overrides.push([key, 'true']);
    } else if (KEY_EQUALS_VALUE.test(arg)) {
      const eq = arg.indexOf('=');
      overrides.push([arg.slice(0, eq).replaceAll('-', '_'), arg.slice(eq + 1)]);
    } else if (path === undefined) {
      path = arg;
    } else {
      throw new UserError(`command line: unexpected argument '${arg}' (the config file is already ${path})`);
    }
  }
  return { path, overrides };
}

function readYaml(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw fileError(path, `cannot read the config file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw fileError(path, `invalid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw fileError(path, 'expected a mapping of keys to values');
  return doc as Record<string, unknown>;
}

/** The keys an export reads; the other supported keys are accepted without a warning (a training YAML exports too). */
export const EXPORT_KEYS = ['model_name_or_path', 'adapter_name_or_path', 'export_dir', 'export_format', 'export_quantization', 'export_size'] as const;

interface ReadConfig {
  /** Parsed values of the wanted keys that were set. */
  values: Partial<Record<keyof TrainConfig, unknown>>;
  /** Where each set key came from (the file, or 'command line'). */
  sources: Partial<Record<keyof TrainConfig, string>>;
  /** The config file, else 'command line': where a missing key is reported. */
  where: string;
  warnings: string[];
}

/** The raw settings of argv = [optional config.yaml, then overrides] (later ones win), or of an object of keys. */
export type ConfigInput = string[] | { values: Record<string, unknown>; source: string };

/** Read the input, parsing the `wanted` keys with their specs. */
function readConfig(input: ConfigInput, wanted: readonly (keyof TrainConfig)[]): ReadConfig {
  const settings = new Map<string, Setting>();
  let where: string;
  if (Array.isArray(input)) {
    const { path, overrides } = parseArgv(input);
    if (path !== undefined) for (const [key, raw] of Object.entries(readYaml(path))) settings.set(key, { raw, source: path });
    for (const [key, raw] of overrides) settings.set(key, { raw, source: 'command line' });
    where = path ?? 'command line';
  } else {
    for (const [key, raw] of Object.entries(input.values)) settings.set(key, { raw, source: input.source });
    where = input.source;
  }

  const warnings: string[] = [];
  const values: Partial<Record<keyof TrainConfig, unknown>> = {};
  const sources: Partial<Record<keyof TrainConfig, string>> = {};
  const noEffect: string[] = [];
  const ignored: string[] = [];
  for (const [key, { raw, source }] of settings) {
    if (key in SPEC) {
      const k = key as keyof TrainConfig;
      if (!wanted.includes(k)) continue;
      sources[k] = source;
      if (raw === null || raw === undefined) continue; // "key: null" or "key:" = the default
      try {
        values[k] = (SPEC[k] as KeySpec<unknown>).parse(raw);
      } catch (e) {
        if (!(e instanceof ValueProblem)) throw e;
        throw new UserError(`${source}: ${key} ${e.message}, got ${describeValue(raw)}`);
      }
      if (NO_EFFECT_KEYS.includes(k) && !(k === 'report_to' && values[k] === 'none')) noEffect.push(key);
    } else if (key in UNSUPPORTED_KEYS) {
      if (!isOff(key, raw)) throw new UserError(`${source}: ${key}: ${UNSUPPORTED_KEYS[key]}`);
    } else if (IGNORED_KEYS.has(key)) {
      ignored.push(key);
    } else {
      warnings.push(`${source}: unknown key '${key}' ignored`);
    }
  }
  if (ignored.length) warnings.push(`LLaMA-Factory keys ignored here: ${ignored.join(', ')}`);
  if (noEffect.length) warnings.push(`keys with no effect here: ${noEffect.join(', ')}`);
  return { values, sources, where, warnings };
}

/** A wanted key's value, or its default. */
function valueOf<K extends keyof TrainConfig>(r: ReadConfig, key: K): TrainConfig[K] {
  return (r.values[key] !== undefined ? r.values[key] : SPEC[key].default) as TrainConfig[K];
}

/**
 * Reads the training config: argv = [optional config.yaml, then overrides], or (the library) an object of the
 * same keys and values with the name errors give for it. Returns the full config (defaults filled in) and
 * warnings for keys that are ignored or unknown.
 */
export function loadTrainConfig(input: ConfigInput): { config: TrainConfig; warnings: string[] } {
  const read = readConfig(input, Object.keys(SPEC) as (keyof TrainConfig)[]);
  const { values, sources, where, warnings } = read;
  for (const key of REQUIRED_KEYS) {
    if (values[key] === undefined) throw new UserError(`${where}: ${key} is required`);
  }
  if (values.template === undefined) {
    warnings.push("template not set: using 'qwen3' (thinking); set template: qwen3_nothink for a non-thinking model");
  }
  const config = Object.fromEntries((Object.keys(SPEC) as (keyof TrainConfig)[]).map((k) => [k, valueOf(read, k)])) as unknown as TrainConfig;
  config.lora_alpha ??= 2 * config.lora_rank;
  if (config.stage === 'pt') checkPretrainConfig(config, values, sources);
  if (config.stage === 'dpo' || config.stage === 'kto') checkPreferenceConfig(config, sources);
  if (config.neat_packing) config.packing = true;
  if (config.eval_dataset !== undefined && config.val_size > 0) {
    throw new UserError(`${sources.val_size}: val_size and eval_dataset cannot both be set`);
  }
  if (config.eval_strategy !== 'no' && config.val_size === 0 && config.eval_dataset === undefined) {
    throw new UserError(`${sources.eval_strategy}: eval_strategy '${config.eval_strategy}' needs val_size or eval_dataset`);
  }
  return { config, warnings };
}

/**
 * stage pt as LLaMA-Factory has it: packing on unless set (its documents are cut into blocks), and no prompt to
 * mask nor samples to keep apart (LLaMA-Factory refuses neat_packing and train_on_prompt outside SFT).
 */
function checkPretrainConfig(config: TrainConfig, values: ReadConfig['values'], sources: ReadConfig['sources']): void {
  if (values.packing === undefined) config.packing = true;
  for (const key of ['neat_packing', 'train_on_prompt'] as const) {
    if (config[key]) throw new UserError(`${sources[key]}: ${key} cannot be set with stage pt (every token of a text is trained; blocks attend across documents)`);
  }
}

/** Stages dpo and kto: each example is two rows of the batch, never packed. */
function checkPreferenceConfig(config: TrainConfig, sources: ReadConfig['sources']): void {
  for (const key of ['packing', 'neat_packing'] as const) {
    if (config[key]) throw new UserError(`${sources[key]}: ${key} cannot be set with stage ${config.stage} (each example is two unpacked rows)`);
  }
}

/** Reads an export config (LLaMA-Factory's export YAML, or a training YAML with export keys) and overrides. */
export function loadExportConfig(input: ConfigInput): { config: ExportOptions; warnings: string[] } {
  const read = readConfig(input, EXPORT_KEYS);
  for (const key of ['model_name_or_path', 'export_dir'] as const) {
    if (read.values[key] === undefined) throw new UserError(`${read.where}: ${key} is required`);
  }
  const config = Object.fromEntries(EXPORT_KEYS.map((k) => [k, valueOf(read, k)])) as unknown as ExportOptions;
  if (config.export_format === 'gguf-lora' && config.adapter_name_or_path === undefined) {
    throw new UserError(`${read.sources.export_format}: export_format gguf-lora needs adapter_name_or_path`);
  }
  return { config, warnings: read.warnings };
}

/** The export a training config asks for at its end (export_dir set): the trained adapter in output_dir. */
export function exportAfterTraining(c: TrainConfig): ExportOptions | undefined {
  if (c.export_dir === undefined) return undefined;
  return {
    model_name_or_path: c.model_name_or_path,
    adapter_name_or_path: c.output_dir,
    export_dir: c.export_dir,
    export_format: c.export_format,
    export_quantization: c.export_quantization,
    export_size: c.export_size,
  };
}

/** A logging/save/eval interval in optimizer steps: HF reads values < 1 as a fraction of the total (rounded up). */
export function stepInterval(value: number, totalSteps: number): number {
  return value < 1 ? Math.max(1, Math.ceil(value * totalSteps)) : value;
}
