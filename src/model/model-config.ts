// Model configuration: parsed from an HF config.json of a supported family (model_type selects its description),
// written back as one, and presets of the released Qwen3 shapes (used to benchmark on random weights of the real
// sizes). No Node API here (the browser demo uses it); config.ts adds reading config.json from a folder.
import { fileError } from '../errors.js';
import type { ModelConfig } from './family.js';
import { FAMILIES } from './families.js';

export type { ModelConfig, ModelType } from './family.js';

// transformers' defaults for keys a config.json may leave out (head_dim's is the family's).
const DEFAULT_ROPE_THETA = 10000;
const DEFAULT_RMS_NORM_EPS = 1e-6;
const DEFAULT_MAX_POSITIONS = 32768;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseModelConfig(json: unknown, file: string): ModelConfig {
  if (!isObject(json)) throw fileError(file, 'config is not a JSON object');
  const modelType = json.model_type;
  const family = typeof modelType === 'string' && Object.hasOwn(FAMILIES, modelType) ? FAMILIES[modelType as keyof typeof FAMILIES] : undefined;
  if (!family) {
    const known = Object.values(FAMILIES).map((f) => `${f.displayName} ("${f.modelType}")`).join(', ');
    throw fileError(file, `model_type is ${JSON.stringify(modelType)}, but only dense ${known} models are supported`);
  }
  const positiveInt = (key: string, fallback?: number): number => {
    const v = json[key] ?? fallback;
    if (v === undefined) throw fileError(file, `${key} is missing`);
    if (!Number.isSafeInteger(v) || (v as number) <= 0) throw fileError(file, `${key} must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const positiveNumber = (key: string, v: unknown): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw fileError(file, `${key} must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const tokenId = (key: string): number | null => {
    const v = json[key];
    if (v === undefined || v === null) return null;
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw fileError(file, `${key} must be a token id, got ${JSON.stringify(v)}`);
    return v as number;
  };

  const numHeads = positiveInt('num_attention_heads');
  const numKvHeads = positiveInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw fileError(file, `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);

  // Older checkpoints (the released Qwen3 ones) have a top-level rope_theta; transformers 5 writes rope_parameters.
  const rawRope = json.rope_parameters ?? undefined;
  if (rawRope !== undefined && !isObject(rawRope)) throw fileError(file, 'rope_parameters is not an object');
  const ropeParams: Record<string, unknown> | undefined = rawRope;
  const ropeType = ropeParams?.rope_type ?? (isObject(json.rope_scaling) ? json.rope_scaling.rope_type ?? json.rope_scaling.type : undefined);
  if (ropeType !== undefined && ropeType !== 'default') throw fileError(file, `RoPE scaling ${JSON.stringify(ropeType)} is not supported (only "default")`);
  const ropeTheta = positiveNumber('rope_theta', ropeParams?.rope_theta ?? json.rope_theta ?? DEFAULT_ROPE_THETA);

  let eosTokenId: number | number[] | null;
  if (Array.isArray(json.eos_token_id)) {
    eosTokenId = json.eos_token_id.map((v) => {
      if (!Number.isSafeInteger(v) || v < 0) throw fileError(file, `eos_token_id must hold token ids, got ${JSON.stringify(json.eos_token_id)}`);
      return v as number;
    });
  } else eosTokenId = tokenId('eos_token_id');

  const tie = json.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') throw fileError(file, `tie_word_embeddings must be true or false, got ${JSON.stringify(tie)}`);
  // Qwen2 always has q/k/v biases (its config has no such key); the other families have none.
  if (json.attention_bias === true && !family.recipe.qkvBias) throw fileError(file, `attention_bias true is not supported (${family.displayName} has no attention biases)`);
  if (json.use_sliding_window === true) throw fileError(file, 'use_sliding_window true is not supported');
  const act = json.hidden_act ?? 'silu';
  if (act !== 'silu') throw fileError(file, `hidden_act ${JSON.stringify(act)} is not supported (only "silu")`);

  const hiddenSize = positiveInt('hidden_size');
  return {
    modelType: family.modelType,
    vocabSize: positiveInt('vocab_size'),
    hiddenSize,
    intermediateSize: positiveInt('intermediate_size'),
    numLayers: positiveInt('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim: positiveInt('head_dim', family.defaultHeadDim(hiddenSize, numHeads)),
    rmsNormEps: positiveNumber('rms_norm_eps', json.rms_norm_eps ?? DEFAULT_RMS_NORM_EPS),
    ropeTheta,
    maxPositionEmbeddings: positiveInt('max_position_embeddings', DEFAULT_MAX_POSITIONS),
    tieWordEmbeddings: tie,
    bosTokenId: tokenId('bos_token_id'),
    eosTokenId,
  };
}

/** An HF-style config.json for the config (what transformers' config class of the family would save). */
export function modelConfigToJson(c: ModelConfig): Record<string, unknown> {
  const family = FAMILIES[c.modelType];
  return {
    architectures: [family.hfArchitecture],
    model_type: family.modelType,
    ...family.configJson(c),
    attention_dropout: 0.0,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    hidden_act: 'silu',
    hidden_size: c.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: c.intermediateSize,
    max_position_embeddings: c.maxPositionEmbeddings,
    num_attention_heads: c.numHeads,
    num_hidden_layers: c.numLayers,
    num_key_value_heads: c.numKvHeads,
    rms_norm_eps: c.rmsNormEps,
    // Both spellings, so that older and newer transformers read the same theta.
    rope_theta: c.ropeTheta,
    rope_parameters: { rope_theta: c.ropeTheta, rope_type: 'default' },
    tie_word_embeddings: c.tieWordEmbeddings,
    use_cache: true,
    vocab_size: c.vocabSize,
  };
}

function preset(hiddenSize: number, numLayers: number, numHeads: number, intermediateSize: number, tieWordEmbeddings: boolean): ModelConfig {
  return {
    modelType: 'qwen3',
    vocabSize: 151936,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads: 8,
    headDim: 128,
    rmsNormEps: 1e-6,
    ropeTheta: 1e6,
    maxPositionEmbeddings: 40960,
    tieWordEmbeddings,
    bosTokenId: 151643,
    eosTokenId: 151645,
  };
}

/** Shapes of the released Qwen3 dense models. */
export const QWEN3_SIZES: Record<'0.6B' | '1.7B' | '4B' | '8B', ModelConfig> = {
  '0.6B': preset(1024, 28, 16, 3072, true),
  '1.7B': preset(2048, 28, 16, 6144, true),
  '4B': preset(2560, 36, 32, 9728, true),
  '8B': preset(4096, 36, 32, 12288, false),
};

/**
 * The one tiny Qwen3 (the shape of shared/fixtures/qwen3/tiny-tied): GQA, q/k norms, SwiGLU, tied embeddings at a
 * size software Vulkan runs in seconds. Tests, the bench's `tiny` size, the browser demo and the default job start
 * from it; a caller that needs another shape spreads it with explicit overrides and says why.
 */
export const TINY_QWEN3: ModelConfig = {
  modelType: 'qwen3',
  vocabSize: 512,
  hiddenSize: 64,
  intermediateSize: 160,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  rmsNormEps: 1e-6,
  ropeTheta: 1e6,
  maxPositionEmbeddings: 256,
  tieWordEmbeddings: true,
  bosTokenId: null,
  eosTokenId: null,
};
