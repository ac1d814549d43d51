// The bundled default model: a tiny Qwen3 (GQA, q/k norms, SwiGLU, tied embeddings) with seeded random weights
// made in the browser, and a byte-level BPE tokenizer (the 256 bytes, a few merges for common English pairs,
// ChatML specials), so the demo trains with nothing to download and fast enough on a software GPU.
import type { Qwen3Config } from '../src/model/qwen3-config.js';
import { serializeSafetensors, type TensorToWrite } from '../src/model/safetensors-format.js';
import { qwen3TensorShapes } from '../src/model/weights.js';
import { seededRandom } from '../src/random.js';

const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<think>', '</think>'];
/**
 * BPE merges in byte characters (Ġ is the space). llama.cpp refuses a BPE vocabulary without merges, and these
 * shorten the bundled data a little; each merge's parts exist before it.
 */
const MERGES: [string, string][] = [
  ['Ġ', 't'], ['Ġ', 'a'], ['h', 'e'], ['i', 'n'], ['r', 'e'], ['o', 'n'], ['e', 'r'], ['e', 'n'], ['Ġ', 's'], ['Ġ', 'o'],
  ['e', 'v'], ['o', 'd'], ['ev', 'en'], ['od', 'd'], ['Ġo', 'r'], ['Ġ', 'i'], ['I', 's'], ['Ġ', 'w'], ['a', 'n'], ['Ġt', 'he'],
];
const FIRST_SPECIAL = 256 + MERGES.length;

export const DEFAULT_MODEL_NAME = 'tiny-qwen3 (random weights)';

export const DEFAULT_CONFIG: Qwen3Config = {
  vocabSize: FIRST_SPECIAL + SPECIAL_TOKENS.length,
  hiddenSize: 64,
  intermediateSize: 128,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  maxPositionEmbeddings: 512,
  tieWordEmbeddings: true,
  bosTokenId: null,
  eosTokenId: FIRST_SPECIAL + SPECIAL_TOKENS.indexOf('<|im_end|>'),
};

/** GPT-2's byte-to-character map: printable bytes stand for themselves, the rest take characters from U+0100 on. */
function byteCharacters(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0x100;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

/** tokenizer.json and tokenizer_config.json of the default model's tokenizer. */
export function defaultTokenizerFiles(): { tokenizer: Record<string, unknown>; config: Record<string, unknown> } {
  const vocab: Record<string, number> = {};
  byteCharacters().forEach((c, id) => (vocab[c] = id));
  MERGES.forEach(([a, b], i) => (vocab[a + b] = 256 + i));
  const added = SPECIAL_TOKENS.map((content, i) => ({ id: FIRST_SPECIAL + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  const tokenizer = {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: byteLevel, post_processor: byteLevel, decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: MERGES.map(([a, b]) => `${a} ${b}`) },
  };
  const config = {
    tokenizer_class: 'Qwen2Tokenizer', add_bos_token: false, bos_token: null, eos_token: '<|im_end|>', pad_token: '<|endoftext|>',
    clean_up_tokenization_spaces: false, model_max_length: DEFAULT_CONFIG.maxPositionEmbeddings,
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...t }) => [String(id), t])),
    chat_template: "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
  };
  return { tokenizer, config };
}

/** model.safetensors of the default model: normal(0, 0.02) matrices and norms near 1, seeded. */
export function defaultModelSafetensors(seed = 1234): Uint8Array {
  const rand = seededRandom(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const tensors: TensorToWrite[] = [];
  for (const [name, shape] of qwen3TensorShapes(DEFAULT_CONFIG)) {
    const isNorm = shape.length === 1;
    const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (isNorm ? 1 + 0.1 * normal() : 0.02 * normal()));
    tensors.push({ name, dtype: 'F32', shape, data });
  }
  return serializeSafetensors(tensors, { format: 'pt' });
}
