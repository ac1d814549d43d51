// Continued pretraining (stage pt): documents to batch rows in which every token is trained, the way
// LLaMA-Factory's pretraining preprocessing lays them out.
//
// Facts followed (LLaMA-Factory data/processor/pretrain.py, data/loader.py, hparams/parser.py, template.py):
// - Each document is its text followed by the EOS token; the qwen3 templates replace the tokenizer's EOS with
//   <|im_end|> (replace_eos), so that is the token appended. No chat template, no BOS (Qwen adds none).
//   (With no template set LLaMA-Factory keeps the tokenizer's own EOS: <|im_end|> for Qwen3's chat and hybrid
//   models, <|endoftext|> for the Base ones. Here the template defaults to qwen3, so it is always <|im_end|>.)
// - With packing (the default for pt) the tokens of a group of preprocessing_batch_size documents are concatenated
//   and cut into blocks of cutoff_len tokens; the tail of each group that fills no block is dropped.
// - Without packing each document is one row, truncated to cutoff_len.
// - Labels are the input ids (nothing masked); the model predicts token t+1 from token t within a row.
// Decision: a block is one attention segment with positions 0..cutoff_len-1, so a document sees the end of the one
// before it in its block, as in LLaMA-Factory (it has no segment mask for pt and refuses neat_packing outside SFT).
// Blocks cut documents anyway; the EOS between documents marks where one ends.
import type { Row } from './batch.js';
import type { TokenEncoder } from './template.js';

/** The token ids of one document: its text, then the EOS id. */
export function documentIds(text: string, tok: TokenEncoder, eosId: number): number[] {
  return [...tok.encode(text), eosId];
}

/** A row whose every token is trained: positions from 0, one segment. */
function textRow(ids: number[]): Row {
  return { inputIds: ids, labels: ids.slice(), positions: ids.map((_, i) => i), segments: ids.map(() => 1) };
}

/**
 * Rows of blockLen tokens: the documents of each group of `groupSize` concatenated and cut into blocks, the tail
 * of a group that fills no block dropped.
 */
export function packBlocks(docs: number[][], blockLen: number, groupSize: number): Row[] {
  const rows: Row[] = [];
  for (let g = 0; g < docs.length; g += groupSize) {
    const stream = docs.slice(g, g + groupSize).flat();
    for (let i = 0; i + blockLen <= stream.length; i += blockLen) rows.push(textRow(stream.slice(i, i + blockLen)));
  }
  return rows;
}

/** One row per document, truncated to cutoffLen tokens. */
export function documentRows(docs: number[][], cutoffLen: number): Row[] {
  return docs.map((ids) => textRow(ids.slice(0, cutoffLen)));
}
