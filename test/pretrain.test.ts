// Stage pt data: documents (a text column, LLaMA-Factory's c4_demo through its own dataset_info.json) to rows in
// which every token is trained, packed into cutoff_len blocks (the tail of each group dropped) or one per document.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import type { ModelConfig } from '../src/model/model-config.js';
import { collate } from '../src/train/batch.js';
import { loadTrainConfig } from '../src/train/config.js';
import { loadDatasets, loadDocuments } from '../src/train/dataset.js';
import { documentIds, documentRows, packBlocks } from '../src/train/pretrain.js';
import { layoutDocuments, type DataSettings, type DataTokenizer } from '../src/train/prepare.js';
import { TINY_CONFIG } from './tiny-model.js';

const LLAMA_FACTORY_DATA = 'test/data/llamafactory';
const IM_END = 1000;

/** One id per character; <|im_end|> is IM_END. */
const charTokenizer: DataTokenizer = {
  encode: (text) => [...text].map((c) => c.codePointAt(0)!),
  eosTokenId: 999,
  tokenId: (token) => (token === '<|im_end|>' ? IM_END : token === '<|endoftext|>' ? 998 : undefined),
};

const ids = (...lengths: number[]) => lengths.map((n, d) => Array.from({ length: n }, (_, i) => 100 * (d + 1) + i));

describe('documents to rows', () => {
  it('a document is its tokens then the EOS id', () => {
    expect(documentIds('ab', charTokenizer, IM_END)).toEqual([97, 98, IM_END]);
  });

  it('packing concatenates a group, cuts blockLen blocks and drops the tail; labels are the ids; one segment', () => {
    const docs = ids(3, 4, 2); // 9 tokens
    const rows = packBlocks(docs, 4, 1000);
    expect(rows.map((r) => r.inputIds)).toEqual([[100, 101, 102, 200], [201, 202, 203, 300]]);
    for (const r of rows) {
      expect(r.labels).toEqual(r.inputIds);
      expect(r.positions).toEqual([0, 1, 2, 3]);
      expect(r.segments).toEqual([1, 1, 1, 1]);
    }
    // Groups of 2 documents: [3+4] gives one block (tail 3 dropped), [2] none.
    expect(packBlocks(docs, 4, 2).map((r) => r.inputIds)).toEqual([[100, 101, 102, 200]]);
    expect(packBlocks(ids(3), 4, 1000)).toEqual([]);
  });

  it('without packing each document is a row truncated to cutoff_len', () => {
    const rows = documentRows(ids(5, 2), 3);
    expect(rows.map((r) => r.inputIds)).toEqual([[100, 101, 102], [200, 201]]);
    expect(rows[1]!.labels).toEqual([200, 201]);
  });

  it('a block trains every next-token prediction in it, across document ends', () => {
    const [row] = packBlocks(ids(2, 2), 4, 1000);
    const batch = collate([row!], { padId: 0, cutoffLen: 4, T: 4 });
    expect(Array.from(batch.targets)).toEqual([101, 200, 201, -100]);
    expect(batch.countedTokens).toBe(3);
  });
});

describe('pt datasets', () => {
  it("LLaMA-Factory's c4_demo through its own dataset_info.json (JSON lines, columns {prompt: text})", () => {
    const docs = loadDocuments({ dataset: 'c4_demo', dataset_dir: LLAMA_FACTORY_DATA });
    const texts = readFileSync(`${LLAMA_FACTORY_DATA}/c4_demo.jsonl`, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { text: string }).text);
    expect(docs).toEqual(texts);
    expect(docs).toHaveLength(8);
    expect(loadDocuments({ dataset: 'c4_demo', dataset_dir: LLAMA_FACTORY_DATA, max_samples: 3 })).toEqual(texts.slice(0, 3));
  });

  it('a file with a text column is read as documents by path; alpaca prompts and sharegpt first messages too', () => {
    expect(loadDocuments({ dataset: `${LLAMA_FACTORY_DATA}/c4_demo.jsonl`, dataset_dir: '.' })).toHaveLength(8);
    expect(loadDocuments({ dataset: 'alpaca_small', dataset_dir: 'test/data' })[0]).toBe('Add the numbers.\n2 and 3');
    expect(loadDocuments({ dataset: 'sharegpt_small', dataset_dir: 'test/data' })[0]).toBe(loadDatasets({ dataset: 'sharegpt_small', dataset_dir: 'test/data' })[0]!.turns[0]!.user);
    // For SFT a text column is no conversation.
    expect(() => loadDatasets({ dataset: `${LLAMA_FACTORY_DATA}/c4_demo.jsonl`, dataset_dir: '.' })).toThrow(/cannot tell the format \(keys: text\).*\(a text column is read by stage pt\)/);
  });

  const settings: DataSettings = { dataset: 'docs', cutoff_len: 8, template: 'qwen3', train_on_prompt: false, enable_thinking: true, val_size: 0, seed: 1, packing: true, neat_packing: false, preprocessing_batch_size: 1000 };
  const model: ModelConfig = TINY_CONFIG;

  it('layoutDocuments: blocks of cutoff_len ending documents with <|im_end|>, validation split from the blocks', () => {
    const docs = ['abcdefg', 'hijklmnopq', 'rstuvw']; // 8 + 11 + 7 = 26 tokens: 3 blocks of 8
    const data = layoutDocuments(docs, undefined, settings, charTokenizer, model);
    expect(data.T).toBe(8);
    expect(data.padId).toBe(998);
    expect(data.train.map((r) => r.inputIds)).toEqual([
      [...'abcdefg'].map((c) => c.charCodeAt(0)).concat(IM_END),
      [...'hijklmno'].map((c) => c.charCodeAt(0)),
      [...'pq'].map((c) => c.charCodeAt(0)).concat(IM_END, ...[...'rstuv'].map((c) => c.charCodeAt(0))),
    ]);
    const split = layoutDocuments(docs, undefined, { ...settings, val_size: 1 / 3 }, charTokenizer, model);
    expect(split.train).toHaveLength(2);
    expect(split.val).toHaveLength(1);
    const unpacked = layoutDocuments(docs, undefined, { ...settings, packing: false }, charTokenizer, model);
    expect(unpacked.train.map((r) => r.inputIds.length)).toEqual([8, 8, 7]);
    expect(unpacked.T).toBe(8);
  });

  it('documents that fill no block are a UserError', () => {
    expect(() => layoutDocuments(['abc'], undefined, settings, charTokenizer, model)).toThrow(UserError);
    expect(() => layoutDocuments(['abc'], undefined, settings, charTokenizer, model)).toThrow("dataset 'docs': its 1 documents (4 tokens) fill no block of cutoff_len 8 tokens");
  });
});

describe('stage pt config', () => {
  const base = { model_name_or_path: 'm', dataset: 'c4_demo', stage: 'pt' };
  it('packs by default, as LLaMA-Factory does for pt; an explicit packing: false is kept', () => {
    expect(loadTrainConfig({ values: base, source: 'job' }).config).toMatchObject({ stage: 'pt', packing: true, preprocessing_batch_size: 1000 });
    expect(loadTrainConfig({ values: { ...base, packing: false }, source: 'job' }).config.packing).toBe(false);
    expect(loadTrainConfig({ values: { ...base, stage: 'sft' }, source: 'job' }).config.packing).toBe(false);
  });

  it('neat_packing and train_on_prompt are refused with pt', () => {
    expect(() => loadTrainConfig({ values: { ...base, neat_packing: true }, source: 'job' })).toThrow(/neat_packing cannot be set with stage pt/);
    expect(() => loadTrainConfig({ values: { ...base, train_on_prompt: true }, source: 'job' })).toThrow(/train_on_prompt cannot be set with stage pt/);
  });
});
