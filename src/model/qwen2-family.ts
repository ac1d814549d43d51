// The Qwen2 / Qwen2.5 dense family (model_type "qwen2"): biases on the q, k and v projections, no Q/K norm;
// otherwise Qwen3's layer (GQA, RoPE, SwiGLU, tied or untied embeddings). Its config.json has no head_dim key:
// transformers takes hidden_size / num_attention_heads.
import type { ModelFamily } from './family.js';
import { QWEN_GLOBALS, QWEN_LAYER_NORMS, QWEN_PROJECTIONS } from './qwen3-family.js';

export const QWEN2: ModelFamily = {
  modelType: 'qwen2',
  hfArchitecture: 'Qwen2ForCausalLM',
  ggufArchitecture: 'qwen2',
  displayName: 'Qwen2',
  recipe: { qkNorm: false, qkvBias: true },
  defaultHeadDim: (hiddenSize, numHeads) => Math.floor(hiddenSize / numHeads),
  configJson: (c) => ({ head_dim: c.headDim, use_sliding_window: false, sliding_window: null, max_window_layers: c.numLayers }),
  ...QWEN_GLOBALS,
  layerVectors: [
    ...QWEN_LAYER_NORMS,
    { key: 'qBias', kind: 'bias', hf: 'self_attn.q_proj.bias', gguf: 'attn_q.bias', size: (c) => c.numHeads * c.headDim },
    { key: 'kBias', kind: 'bias', hf: 'self_attn.k_proj.bias', gguf: 'attn_k.bias', size: (c) => c.numKvHeads * c.headDim },
    { key: 'vBias', kind: 'bias', hf: 'self_attn.v_proj.bias', gguf: 'attn_v.bias', size: (c) => c.numKvHeads * c.headDim },
  ],
  projections: QWEN_PROJECTIONS,
};
