// The preference stages' data: each example becomes two rows of the batch. As LLaMA-Factory's pairwise and
// feedback processors encode them: everything before the last answer is the prompt (untrained, train_on_prompt
// does not apply), the last answer the response, cut with SFT's infer_seqlen (template.ts); a pair's prompt and
// both answers are cut together, by the longer answer, so the two rows share the same prompt.
// - dpo: the chosen and the rejected answer of a ranking record (the batch: chosen rows, then rejected rows).
// - kto: the example, and its KL row: the same prompt with the answer of the example before it (the first takes
//   the last one's), within groups of 1000 records, as LLaMA-Factory's feedback processor pairs them in its
//   preprocessing batches (preprocessing_batch_size 1000).
// No Node API here.
import { UserError } from '../errors.js';
import type { ModelConfig } from '../model/model-config.js';
import type { Conversation, KtoRecord, PreferencePair } from './dataset-format.js';
import { encodePromptResponse, IGNORE_INDEX, inferSeqlen, type EncodedSample, type EncodeOptions } from './template.js';
import { sampleRow, splitTrainVal, type Row } from './batch.js';
import type { DataSettings, DataTokenizer, PreparedData } from './prepare.js';

/** LLaMA-Factory's default preprocessing batch: the KL rows take their answers from within such a group. */
const KL_GROUP = 1000;

interface TwoRowExample {
  first: EncodedSample;
  second: EncodedSample;
  desirable: boolean;
}

const trainable = (s: EncodedSample) => s.labels.some((l) => l !== -100);

function encodeOptions(cfg: DataSettings): EncodeOptions {
  return { template: cfg.template, cutoffLen: cfg.cutoff_len, trainOnPrompt: false, enableThinking: cfg.enable_thinking };
}

/** prompt[:sourceLen] + response[:targetLen], the prompt labelled −100. */
function promptRow(prompt: number[], response: number[], sourceLen: number, targetLen: number): EncodedSample {
  const answer = response.slice(0, targetLen);
  return { inputIds: [...prompt.slice(0, sourceLen), ...answer], labels: [...Array<number>(sourceLen).fill(IGNORE_INDEX), ...answer] };
}

/** One answered conversation as LLaMA-Factory's feedback processor cuts it (its own infer_seqlen). */
function oneTurnRow(c: Conversation, tokenizer: DataTokenizer, cfg: DataSettings): EncodedSample {
  const { prompt, response } = encodePromptResponse(c, tokenizer, encodeOptions(cfg));
  const [sourceLen, targetLen] = inferSeqlen(prompt.length, response.length, cfg.cutoff_len);
  return promptRow(prompt, response, sourceLen, targetLen);
}

function layoutExamples(train: TwoRowExample[], evalSet: TwoRowExample[] | undefined, cfg: DataSettings, tokenizer: DataTokenizer, model: ModelConfig, what: string): PreparedData {
  if (cfg.cutoff_len > model.maxPositionEmbeddings) {
    throw new UserError(`cutoff_len ${cfg.cutoff_len} is beyond the model's context of ${model.maxPositionEmbeddings} tokens`);
  }
  if (cfg.packing || cfg.neat_packing) throw new UserError(`packing: the ${what} rows are not packed (set packing: false)`);
  let val: TwoRowExample[] = [];
  if (evalSet) val = evalSet;
  else if (cfg.val_size > 0) ({ train, val } = splitTrainVal(train, cfg.val_size, cfg.seed));
  if (train.length === 0) throw new UserError(`dataset '${cfg.dataset}': no ${what} with trainable answers after templating and truncation`);
  const rows = (xs: TwoRowExample[], which: 'first' | 'second'): Row[] => xs.map((x) => sampleRow(x[which]));
  const longest = [...train, ...val].reduce((m, x) => Math.max(m, x.first.inputIds.length, x.second.inputIds.length), 1);
  const T = Math.min(cfg.cutoff_len, Math.ceil(longest / 8) * 8);
  const padId = tokenizer.tokenId('<|endoftext|>') ?? tokenizer.eosTokenId;
  return {
    train: rows(train, 'first'), val: rows(val, 'first'), T, padId,
    second: { train: rows(train, 'second'), val: rows(val, 'second') },
    desirable: { train: train.map((x) => x.desirable), val: val.map((x) => x.desirable) },
  };
}

/** stage dpo: a pair's two rows; pairs where either answer has no trainable token after truncation are left out. */
export function layoutPairs(trainSet: PreferencePair[], evalSet: PreferencePair[] | undefined, cfg: DataSettings, tokenizer: DataTokenizer, model: ModelConfig): PreparedData {
  const options = encodeOptions(cfg);
  const encodePair = (p: PreferencePair): TwoRowExample => {
    const chosen = encodePromptResponse(p.chosen, tokenizer, options);
    const rejected = encodePromptResponse(p.rejected, tokenizer, options).response;
    const [sourceLen, targetLen] = inferSeqlen(chosen.prompt.length, Math.max(chosen.response.length, rejected.length), cfg.cutoff_len);
    return { first: promptRow(chosen.prompt, chosen.response, sourceLen, targetLen), second: promptRow(chosen.prompt, rejected, sourceLen, targetLen), desirable: true };
  };
  const examples = (pairs: PreferencePair[]) => pairs.map(encodePair).filter((x) => trainable(x.first) && trainable(x.second));
  return layoutExamples(examples(trainSet), evalSet && examples(evalSet), cfg, tokenizer, model, 'preference pair');
}

/** The conversation with its last answer replaced by `answer`'s last answer. */
function withAnswerOf(c: Conversation, answer: Conversation): Conversation {
  const turns = c.turns.slice();
  turns[turns.length - 1] = { ...turns.at(-1)!, assistant: answer.turns.at(-1)!.assistant };
  return { ...c, turns };
}

/** stage kto: the example and its KL row (see the header); examples without a trainable token are left out. */
export function layoutKto(trainSet: KtoRecord[], evalSet: KtoRecord[] | undefined, cfg: DataSettings, tokenizer: DataTokenizer, model: ModelConfig): PreparedData {
  const encode = (c: Conversation) => oneTurnRow(c, tokenizer, cfg);
  const examples = (records: KtoRecord[]) => records
    .map((r, i) => {
      const groupStart = i - (i % KL_GROUP);
      const groupEnd = Math.min(records.length, groupStart + KL_GROUP);
      const other = records[i === groupStart ? groupEnd - 1 : i - 1]!;
      return { first: encode(r.conversation), second: encode(withAnswerOf(r.conversation, other.conversation)), desirable: r.desirable };
    })
    .filter((x) => trainable(x.first));
  return layoutExamples(examples(trainSet), evalSet && examples(evalSet), cfg, tokenizer, model, 'KTO example');
}
