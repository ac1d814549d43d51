// What a model family is, as data: the model configuration every family shares, the projection list (one
// spelling: HF's and PEFT's module names, which is also what LLaMA-Factory's lora_target takes), the layer
// recipe (which optional ops a decoder layer has) and the tensor tables (HF name, GGUF name, shape). The
// descriptions themselves are in <family>-family.ts; families.ts looks them up and derives names and shapes.
// No Node API and no imports: everything else in the model reads these types.

export type ModelType = 'qwen3' | 'qwen2';

/** The shape and hyper-parameters of a decoder-only model (from its config.json). */
export interface ModelConfig {
  /** config.json's model_type: selects the family description. */
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
}

/** The seven linear projections of a decoder layer, in graph order (LoRA dropout salts follow this order). */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

/**
 * The ops of one decoder layer beyond what every family here has (RMSNorm, GQA attention with RoPE, SwiGLU MLP,
 * residual adds):
 * - `qkNorm`: per-head RMSNorm of Q and K before RoPE (Qwen3);
 * - `qkvBias`: biases on the q, k and v projections (Qwen2).
 */
export interface LayerRecipe {
  qkNorm: boolean;
  qkvBias: boolean;
}

/** Vectors of one layer (norm weights and biases), f32 on the GPU. */
export type LayerVectorKey = 'inputNorm' | 'postAttnNorm' | 'qNorm' | 'kNorm' | 'qBias' | 'kBias' | 'vBias';

/** A tensor's name in an HF checkpoint and in llama.cpp's GGUF (inside a layer: after `model.layers.N.` / `blk.N.`). */
export interface TensorNames {
  hf: string;
  gguf: string;
}

export interface LayerVector extends TensorNames {
  key: LayerVectorKey;
  /** Norm weights start near 1, biases near 0 (what random-weight generators need to know). */
  kind: 'norm' | 'bias';
  /** Its length under a config. */
  size(c: ModelConfig): number;
}

export interface ModelFamily {
  modelType: ModelType;
  /** config.json's `architectures` entry. */
  hfArchitecture: string;
  /** GGUF general.architecture, which is also the prefix of llama.cpp's hyper-parameter keys. */
  ggufArchitecture: string;
  /** Human name, e.g. the default general.name of an export. */
  displayName: string;
  recipe: LayerRecipe;
  /** head_dim when config.json has none. */
  defaultHeadDim(hiddenSize: number, numHeads: number): number;
  /** config.json keys of this family beyond the shared ones (modelConfigToJson adds them). */
  configJson(c: ModelConfig): Record<string, unknown>;
  /** Whole-model tensors; `lmHead` only when the embeddings are not tied. */
  embed: TensorNames;
  finalNorm: TensorNames;
  lmHead: TensorNames;
  /** Each layer's vectors, in checkpoint order (written before the matrices). */
  layerVectors: readonly LayerVector[];
  /** Each layer's projection weights, by projection: `hf` is the module path (`self_attn.q_proj`). */
  projections: Readonly<Record<Projection, TensorNames>>;
}
