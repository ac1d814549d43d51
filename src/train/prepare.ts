// From conversations to the batches of a run: tokenized with the template, split into train and validation,
// laid out in rows (packed or not) of one fixed length, and the seeded micro-batch order. The data order is a
// function of (seed, micro-batch index), so a resumed run visits exactly the batches an uninterrupted run would.
// No Node API here (the browser demo trains with it); run.ts adds datasets from files.
import { UserError } from '../errors.js';
import type { ModelConfig } from '../model/model-config.js';
import type { TrainConfig } from './config.js';
import type { Conversation } from './dataset-format.js';
import { encodeConversation, type EncodedSample, type TokenEncoder } from './template.js';
import { collate, epochOrder, packRows, sampleRow, splitTrainVal, type Batch, type Row } from './batch.js';
import { warmupSteps } from './schedule.js';
import { documentIds, documentRows, packBlocks } from './pretrain.js';

export interface PreparedData {
  train: Row[];
  val: Row[];
  /** Fixed sequence length of every batch (one recorded graph). */
  T: number;
  padId: number;
  /**
   * Preference stages (preference-data.ts): each train / val example's second row (dpo: the rejected answer, kto:
   * the KL row); a micro-batch of B examples is then 2B rows, the first rows, then the second ones.
   */
  second?: { train: Row[]; val: Row[] };
  /** kto: whether each train / val example's answer is desirable. */
  desirable?: { train: boolean[]; val: boolean[] };
}

/** The settings that shape the data. */
export type DataSettings = Pick<TrainConfig, 'dataset' | 'cutoff_len' | 'template' | 'train_on_prompt' | 'enable_thinking' | 'val_size' | 'seed' | 'packing' | 'neat_packing'> & Partial<Pick<TrainConfig, 'preprocessing_batch_size'>>;

/** What preparing data needs of a tokenizer. */
export interface DataTokenizer extends TokenEncoder {
  readonly eosTokenId: number;
  tokenId(token: string): number | undefined;
}

/**
 * Tokenize, split and lay out conversations: `evalSet` is the eval dataset when there is one, else val_size of the
 * training set is held out.
 */
export function layoutData(trainSet: Conversation[], evalSet: Conversation[] | undefined, cfg: DataSettings, tokenizer: DataTokenizer, model: ModelConfig): PreparedData {
  if (cfg.cutoff_len > model.maxPositionEmbeddings) {
    throw new UserError(`cutoff_len ${cfg.cutoff_len} is beyond the model's context of ${model.maxPositionEmbeddings} tokens`);
  }
  const encode = (convs: Conversation[]) => convs
    .map((c) => encodeConversation(c, tokenizer, { template: cfg.template, cutoffLen: cfg.cutoff_len, trainOnPrompt: cfg.train_on_prompt, enableThinking: cfg.enable_thinking }))
    .filter((s) => s.labels.some((l) => l !== -100));
  let train: EncodedSample[] = encode(trainSet);
  let val: EncodedSample[] = [];
  if (evalSet) val = encode(evalSet);
  else if (cfg.val_size > 0) ({ train, val } = splitTrainVal(train, cfg.val_size, cfg.seed));
  if (train.length === 0) throw new UserError(`dataset '${cfg.dataset}': no sample with a trainable answer after templating and truncation`);
  const layout = (s: EncodedSample[]) => (cfg.packing ? packRows(s, cfg.cutoff_len, cfg.neat_packing) : s.map(sampleRow));
  return preparedRows(layout(train), layout(val), cfg, tokenizer);
}

/** Rows of one fixed length T: cutoff_len when packed, else the longest row rounded up to a multiple of 8. */
function preparedRows(train: Row[], val: Row[], cfg: DataSettings, tokenizer: DataTokenizer): PreparedData {
  const longest = [...train, ...val].reduce((m, r) => Math.max(m, r.inputIds.length), 1);
  const T = cfg.packing ? cfg.cutoff_len : Math.min(cfg.cutoff_len, Math.ceil(longest / 8) * 8);
  const padId = tokenizer.tokenId('<|endoftext|>') ?? tokenizer.eosTokenId;
  return { train, val, T, padId };
}

/**
 * Stage pt: documents to rows in which every token is trained (pretrain.ts), packed into cutoff_len blocks or one
 * per document; the validation split is taken from the rows (LLaMA-Factory splits after preprocessing).
 */
export function layoutDocuments(trainSet: string[], evalSet: string[] | undefined, cfg: DataSettings, tokenizer: DataTokenizer, model: ModelConfig): PreparedData {
  if (cfg.cutoff_len > model.maxPositionEmbeddings) {
    throw new UserError(`cutoff_len ${cfg.cutoff_len} is beyond the model's context of ${model.maxPositionEmbeddings} tokens`);
  }
  // LLaMA-Factory's qwen3 templates make <|im_end|> the EOS (replace_eos), whatever the tokenizer's own.
  const eosId = tokenizer.tokenId('<|im_end|>') ?? tokenizer.eosTokenId;
  const rows = (docs: string[]): Row[] => {
    const ids = docs.map((d) => documentIds(d, tokenizer, eosId));
    return cfg.packing ? packBlocks(ids, cfg.cutoff_len, cfg.preprocessing_batch_size ?? 1000) : documentRows(ids, cfg.cutoff_len);
  };
  let train = rows(trainSet);
  let val: Row[] = [];
  if (evalSet) val = rows(evalSet);
  else if (cfg.val_size > 0 && train.length > 0) ({ train, val } = splitTrainVal(train, cfg.val_size, cfg.seed));
  if (train.length === 0) {
    const tokens = trainSet.reduce((n, d) => n + documentIds(d, tokenizer, eosId).length, 0);
    throw new UserError(`dataset '${cfg.dataset}': its ${trainSet.length} documents (${tokens} tokens) fill no block of cutoff_len ${cfg.cutoff_len} tokens: lower cutoff_len or add text`);
  }
  return preparedRows(train, val, cfg, tokenizer);
}

/** Micro-batch number m of the run: rows of epoch floor(m / perEpoch) in that epoch's seeded order. */
export function microBatch(data: PreparedData, B: number, seed: number, m: number): Batch {
  const perEpoch = Math.ceil(data.train.length / B);
  const epoch = Math.floor(m / perEpoch);
  const order = epochOrder(data.train.length, seed, epoch);
  const i = (m % perEpoch) * B;
  return collateRows(data, 'train', order.slice(i, i + B), B);
}

/** Rows `picked` of the train or val set as one batch of B (preference stages: B examples, 2B rows). */
function collateRows(data: PreparedData, set: 'train' | 'val', picked: number[], B: number): Batch {
  const first = data[set];
  if (!data.second) return collate(picked.map((k) => first[k]!), { padId: data.padId, cutoffLen: data.T, T: data.T, B });
  // Two rows per example; a short last batch is padded with empty rows, which the preference loss leaves out.
  const empty: Row = { inputIds: [], labels: [], positions: [], segments: [] };
  const padded = (rows: Row[]) => [...rows, ...Array.from({ length: B - rows.length }, () => empty)];
  const second = data.second[set];
  const batch = collate([...padded(picked.map((k) => first[k]!)), ...padded(picked.map((k) => second[k]!))], { padId: data.padId, cutoffLen: data.T, T: data.T, B: 2 * B });
  const desirable = data.desirable?.[set];
  if (desirable) batch.desirable = Uint32Array.from({ length: B }, (_, j) => (j < picked.length && desirable[picked[j]!] ? 1 : 0));
  return batch;
}

export function valBatches(data: PreparedData, B: number): Batch[] {
  const out: Batch[] = [];
  for (let i = 0; i < data.val.length; i += B) out.push(collateRows(data, 'val', Array.from({ length: Math.min(B, data.val.length - i) }, (_, j) => i + j), B));
  return out;
}

export interface RunPlan {
  totalSteps: number;
  microPerStep: number;
  perEpoch: number;
  warmup: number;
}

export function planSteps(cfg: Pick<TrainConfig, 'per_device_train_batch_size' | 'gradient_accumulation_steps' | 'max_steps' | 'num_train_epochs' | 'warmup_steps' | 'warmup_ratio'>, data: PreparedData): RunPlan {
  const perEpoch = Math.ceil(data.train.length / cfg.per_device_train_batch_size);
  const stepsPerEpoch = Math.max(1, Math.floor(perEpoch / cfg.gradient_accumulation_steps));
  const totalSteps = cfg.max_steps > 0 ? cfg.max_steps : Math.max(1, Math.ceil(cfg.num_train_epochs * stepsPerEpoch));
  return { totalSteps, microPerStep: cfg.gradient_accumulation_steps, perEpoch, warmup: warmupSteps(totalSteps, cfg.warmup_steps, cfg.warmup_ratio) };
}

