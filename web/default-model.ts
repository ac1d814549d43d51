// The bundled default model: a tiny Qwen3 (GQA, q/k norms, SwiGLU, tied embeddings) with seeded random weights
// made in the browser, and a byte-level BPE tokenizer (src/model/byte-tokenizer.ts), so the demo trains with
// nothing to download and fast enough on a software GPU.
import { TINY_QWEN3, type ModelConfig } from '../src/model/model-config.js';
import { serializeSafetensors, type TensorToWrite } from '../src/model/safetensors-format.js';
import { NORMAL_INIT, randomModelTensors } from '../src/model/random-weights.js';
import { buildByteTokenizer, BYTE_TOKENIZER_SPECIAL_TOKENS } from '../src/model/byte-tokenizer.js';
import defaultDataset from './default-dataset.json?raw';

// The tokenizer's merges are learned from the bundled dataset, so it shortens exactly the text the demo trains on.
const TOKENIZER = buildByteTokenizer(
  (JSON.parse(defaultDataset) as { instruction: string; output: string }[]).map((r) => `${r.instruction} ${r.output}`),
  256 + 24 + BYTE_TOKENIZER_SPECIAL_TOKENS.length,
);

export const DEFAULT_MODEL_NAME = 'tiny-qwen3 (random weights)';

/**
 * The tiny Qwen3 with the demo tokenizer's vocabulary and end token. The other overrides keep the demo's model as
 * it was before the shared definition (a narrower MLP, 512 positions, the default rope theta), so what the demo
 * learns in a tab does not change.
 */
export const DEFAULT_CONFIG: ModelConfig = {
  ...TINY_QWEN3,
  vocabSize: TOKENIZER.vocabSize,
  intermediateSize: 128,
  ropeTheta: 10000,
  maxPositionEmbeddings: 512,
  eosTokenId: TOKENIZER.vocabSize - BYTE_TOKENIZER_SPECIAL_TOKENS.length + BYTE_TOKENIZER_SPECIAL_TOKENS.indexOf('<|im_end|>'),
};

/** tokenizer.json and tokenizer_config.json of the default model's tokenizer. */
export function defaultTokenizerFiles(): { tokenizer: Record<string, unknown>; config: Record<string, unknown> } {
  return { tokenizer: TOKENIZER.tokenizer as Record<string, unknown>, config: TOKENIZER.config as Record<string, unknown> };
}

/** model.safetensors of the default model: seeded NORMAL_INIT weights (normal(0, 0.02) matrices, norms 1 ± 0.1). */
export function defaultModelSafetensors(seed = 1234): Uint8Array {
  const tensors: TensorToWrite[] = randomModelTensors(DEFAULT_CONFIG, seed, NORMAL_INIT).map(({ tensor, values }) => (
    { name: tensor.hf, dtype: 'F32', shape: tensor.shape, data: values }
  ));
  return serializeSafetensors(tensors, { format: 'pt' });
}
