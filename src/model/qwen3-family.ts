// The Qwen3 dense family (model_type "qwen3"): per-head RMSNorm of Q and K before RoPE, no biases; head_dim is a
// config key of its own (128 by default, as transformers' Qwen3Config). Its tensor names, shared with Qwen2, are
// the layout of transformers' Qwen2/Qwen3 checkpoints and llama.cpp's qwen2/qwen3 architectures.
import type { LayerVector, ModelFamily, Projection, TensorNames } from './family.js';

/** The projections' HF module paths and GGUF names (the same in every Qwen family). */
export const QWEN_PROJECTIONS: Readonly<Record<Projection, TensorNames>> = {
  q_proj: { hf: 'self_attn.q_proj', gguf: 'attn_q' },
  k_proj: { hf: 'self_attn.k_proj', gguf: 'attn_k' },
  v_proj: { hf: 'self_attn.v_proj', gguf: 'attn_v' },
  o_proj: { hf: 'self_attn.o_proj', gguf: 'attn_output' },
  gate_proj: { hf: 'mlp.gate_proj', gguf: 'ffn_gate' },
  up_proj: { hf: 'mlp.up_proj', gguf: 'ffn_up' },
  down_proj: { hf: 'mlp.down_proj', gguf: 'ffn_down' },
};

/** The two RMSNorm weights every Qwen layer has. */
export const QWEN_LAYER_NORMS: readonly LayerVector[] = [
  { key: 'inputNorm', kind: 'norm', hf: 'input_layernorm.weight', gguf: 'attn_norm.weight', size: (c) => c.hiddenSize },
  { key: 'postAttnNorm', kind: 'norm', hf: 'post_attention_layernorm.weight', gguf: 'ffn_norm.weight', size: (c) => c.hiddenSize },
];

export const QWEN_GLOBALS = {
  embed: { hf: 'model.embed_tokens.weight', gguf: 'token_embd.weight' },
  finalNorm: { hf: 'model.norm.weight', gguf: 'output_norm.weight' },
  lmHead: { hf: 'lm_head.weight', gguf: 'output.weight' },
} as const;

export const QWEN3: ModelFamily = {
  modelType: 'qwen3',
  hfArchitecture: 'Qwen3ForCausalLM',
  ggufArchitecture: 'qwen3',
  displayName: 'Qwen3',
  recipe: { qkNorm: true, qkvBias: false },
  defaultHeadDim: () => 128,
  configJson: (c) => ({ attention_bias: false, head_dim: c.headDim, use_sliding_window: false }),
  ...QWEN_GLOBALS,
  layerVectors: [
    ...QWEN_LAYER_NORMS,
    { key: 'qNorm', kind: 'norm', hf: 'self_attn.q_norm.weight', gguf: 'attn_q_norm.weight', size: (c) => c.headDim },
    { key: 'kNorm', kind: 'norm', hf: 'self_attn.k_norm.weight', gguf: 'attn_k_norm.weight', size: (c) => c.headDim },
  ],
  projections: QWEN_PROJECTIONS,
};
