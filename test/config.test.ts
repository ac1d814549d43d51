import { describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { loadModelConfig, parseModelConfig, modelConfigToJson, QWEN3_SIZES } from '../src/model/config.js';
import { FIXTURES } from './helpers.js';


/** The config.json of Qwen/Qwen3-0.6B as released (old style: top-level rope_theta). */
const RELEASED_0_6B = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: 'qwen3',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.51.0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

function parseError(json: unknown): string {
  try {
    parseModelConfig(json, 'config.json');
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('expected a UserError');
}

describe('Qwen3 config', () => {
  it('reads the fixtures (new-style rope_parameters)', () => {
    expect(loadModelConfig(`${FIXTURES}/tiny-tied/model`)).toEqual({
      modelType: 'qwen3', vocabSize: 512, hiddenSize: 64, intermediateSize: 160, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
      rmsNormEps: 1e-6, ropeTheta: 1e6, maxPositionEmbeddings: 256, tieWordEmbeddings: true, bosTokenId: null, eosTokenId: null,
    });
    const small = loadModelConfig(`${FIXTURES}/small-untied/model`);
    expect([small.vocabSize, small.hiddenSize, small.numLayers, small.numHeads, small.numKvHeads, small.headDim, small.tieWordEmbeddings])
      .toEqual([1000, 96, 3, 6, 2, 32, false]);
  });

  it('reads a released config (top-level rope_theta) and matches the 0.6B preset', () => {
    expect(parseModelConfig(RELEASED_0_6B, 'config.json')).toEqual(QWEN3_SIZES['0.6B']);
  });

  it('applies transformers defaults for absent keys', () => {
    const { head_dim: _h, tie_word_embeddings: _t, num_key_value_heads: _k, rope_theta: _r, ...rest } = RELEASED_0_6B;
    const c = parseModelConfig(rest, 'config.json');
    expect(c.headDim).toBe(128);
    expect(c.tieWordEmbeddings).toBe(false);
    expect(c.numKvHeads).toBe(16);
    expect(c.ropeTheta).toBe(10000);
    expect(parseModelConfig({ ...RELEASED_0_6B, eos_token_id: [151645, 151643] }, 'c').eosTokenId).toEqual([151645, 151643]);
  });

  it('refuses other models and bad values with one clear line', () => {
    expect(parseError({ ...RELEASED_0_6B, model_type: 'llama' })).toMatch(/^config.json: model_type is "llama", but only dense Qwen3/);
    expect(parseError({ ...RELEASED_0_6B, model_type: 'qwen3_moe' })).toMatch(/model_type is "qwen3_moe"/);
    expect(parseError({ ...RELEASED_0_6B, num_key_value_heads: 3 })).toMatch(/num_attention_heads 16 is not a multiple of num_key_value_heads 3/);
    expect(parseError({ ...RELEASED_0_6B, hidden_size: 0 })).toMatch(/hidden_size must be a positive integer, got 0/);
    expect(parseError({ ...RELEASED_0_6B, vocab_size: '151936' })).toMatch(/vocab_size must be a positive integer/);
    expect(parseError({ ...RELEASED_0_6B, rms_norm_eps: -1 })).toMatch(/rms_norm_eps must be a positive number/);
    expect(parseError({ ...RELEASED_0_6B, rope_theta: undefined, rope_parameters: { rope_theta: 'x' } })).toMatch(/rope_theta must be a positive number/);
    expect(parseError({ ...RELEASED_0_6B, rope_scaling: { rope_type: 'yarn', factor: 4 } })).toMatch(/RoPE scaling "yarn" is not supported/);
    expect(parseError({ ...RELEASED_0_6B, intermediate_size: undefined })).toMatch(/intermediate_size is missing/);
    expect(parseError([1])).toMatch(/not a JSON object/);
    expect(() => loadModelConfig('/nonexistent-dir')).toThrow(/\/nonexistent-dir\/config.json: cannot read/);
  });

  it('writes a config.json that reads back to the same config', () => {
    for (const c of Object.values(QWEN3_SIZES)) expect(parseModelConfig(modelConfigToJson(c), 'x')).toEqual(c);
    const tiny = loadModelConfig(`${FIXTURES}/tiny-tied/model`);
    expect(parseModelConfig(JSON.parse(JSON.stringify(modelConfigToJson(tiny))), 'x')).toEqual(tiny);
  });

  it('has the released shapes', () => {
    const shape = (k: keyof typeof QWEN3_SIZES) => {
      const c = QWEN3_SIZES[k];
      return [c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.intermediateSize, c.tieWordEmbeddings];
    };
    expect(shape('0.6B')).toEqual([1024, 28, 16, 8, 128, 3072, true]);
    expect(shape('1.7B')).toEqual([2048, 28, 16, 8, 128, 6144, true]);
    expect(shape('4B')).toEqual([2560, 36, 32, 8, 128, 9728, true]);
    expect(shape('8B')).toEqual([4096, 36, 32, 8, 128, 12288, false]);
  });
});

describe('Qwen2 config', () => {
  // The shape of Qwen2.5-0.5B's config.json: no head_dim key, no attention_bias key (Qwen2 always has q/k/v biases).
  const QWEN25_0_5B = {
    architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_act: 'silu', hidden_size: 896, intermediate_size: 4864,
    num_attention_heads: 14, num_key_value_heads: 2, num_hidden_layers: 24, vocab_size: 151936, max_position_embeddings: 32768,
    rms_norm_eps: 1e-6, rope_theta: 1000000.0, sliding_window: 32768, max_window_layers: 21, use_sliding_window: false,
    tie_word_embeddings: true, bos_token_id: 151643, eos_token_id: 151643, torch_dtype: 'bfloat16',
  };

  it('reads a Qwen2.5 config: head_dim from hidden_size / num_attention_heads', () => {
    expect(parseModelConfig(QWEN25_0_5B, 'config.json')).toEqual({
      modelType: 'qwen2', vocabSize: 151936, hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14, numKvHeads: 2, headDim: 64,
      rmsNormEps: 1e-6, ropeTheta: 1e6, maxPositionEmbeddings: 32768, tieWordEmbeddings: true, bosTokenId: 151643, eosTokenId: 151643,
    });
  });

  it('writes a config.json that reads back the same', () => {
    const c = parseModelConfig(QWEN25_0_5B, 'config.json');
    const json = modelConfigToJson(c);
    expect(json.model_type).toBe('qwen2');
    expect(json.architectures).toEqual(['Qwen2ForCausalLM']);
    expect(parseModelConfig(json, 'config.json')).toEqual(c);
  });

  it('refuses sliding-window attention', () => {
    expect(parseError({ ...QWEN25_0_5B, use_sliding_window: true })).toMatch(/use_sliding_window true is not supported/);
  });
});

