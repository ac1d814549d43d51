// The model families by model_type, and what follows from a description: every tensor's HF and GGUF name and
// shape, the projections' dimensions and PEFT names, and lora_target parsing. Loading, LoRA, GGUF export, merge,
// the memory plan and the bench all read names and shapes from here. No Node API.
import { UserError } from '../errors.js';
import { PROJECTIONS, type LayerVectorKey, type ModelConfig, type ModelFamily, type ModelType, type Projection } from './family.js';
import { QWEN2 } from './qwen2-family.js';
import { QWEN3 } from './qwen3-family.js';

export const FAMILIES: Readonly<Record<ModelType, ModelFamily>> = { qwen3: QWEN3, qwen2: QWEN2 };

export function familyOf(c: Pick<ModelConfig, 'modelType'>): ModelFamily {
  return FAMILIES[c.modelType];
}

/** [in, out] of a projection. */
export function projectionDims(c: ModelConfig, p: Projection): [number, number] {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  switch (p) {
    case 'q_proj': return [c.hiddenSize, q];
    case 'k_proj': case 'v_proj': return [c.hiddenSize, kv];
    case 'o_proj': return [q, c.hiddenSize];
    case 'gate_proj': case 'up_proj': return [c.hiddenSize, c.intermediateSize];
    case 'down_proj': return [c.intermediateSize, c.hiddenSize];
  }
}

/** One tensor of a model: its HF name, llama.cpp's name and its HF (row-major) shape. */
export interface ModelTensor {
  hf: string;
  gguf: string;
  shape: number[];
  kind: 'matrix' | 'norm' | 'bias';
  /** Set on the layer tensors: the layer, and which vector or projection it is. */
  layer?: number;
  vector?: LayerVectorKey;
  projection?: Projection;
}

/**
 * Every tensor a checkpoint of this config holds, in checkpoint order: the embeddings, then per layer its vectors
 * and its projection weights, the final norm, and lm_head unless the embeddings are tied.
 */
export function modelTensors(c: ModelConfig): ModelTensor[] {
  const f = familyOf(c);
  const out: ModelTensor[] = [{ ...f.embed, shape: [c.vocabSize, c.hiddenSize], kind: 'matrix' }];
  for (let l = 0; l < c.numLayers; l++) {
    for (const v of f.layerVectors) {
      out.push({ hf: `model.layers.${l}.${v.hf}`, gguf: `blk.${l}.${v.gguf}`, shape: [v.size(c)], kind: v.kind, layer: l, vector: v.key });
    }
    for (const p of PROJECTIONS) {
      const [inDim, outDim] = projectionDims(c, p);
      out.push({ hf: projectionWeightName(c, l, p), gguf: `blk.${l}.${f.projections[p].gguf}.weight`, shape: [outDim, inDim], kind: 'matrix', layer: l, projection: p });
    }
  }
  out.push({ ...f.finalNorm, shape: [c.hiddenSize], kind: 'norm' });
  if (!c.tieWordEmbeddings) out.push({ ...f.lmHead, shape: [c.vocabSize, c.hiddenSize], kind: 'matrix' });
  return out;
}

/** Every HF tensor name of a checkpoint with this config, with its shape (checkpoint order). */
export function modelTensorShapes(c: ModelConfig): Map<string, number[]> {
  return new Map(modelTensors(c).map((t) => [t.hf, t.shape]));
}

/** HF name of the weight a projection holds, e.g. model.layers.3.mlp.up_proj.weight. */
export function projectionWeightName(c: Pick<ModelConfig, 'modelType'>, layer: number, p: Projection): string {
  return `model.layers.${layer}.${familyOf(c).projections[p].hf}.weight`;
}

/** PEFT's saved name of a LoRA factor, e.g. base_model.model.model.layers.3.mlp.up_proj.lora_A.weight. */
export function peftTensorName(c: Pick<ModelConfig, 'modelType'>, layer: number, p: Projection, factor: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${familyOf(c).projections[p].hf}.lora_${factor}.weight`;
}

/** A bad lora_target / target_modules; `problem` is the message without the key's name. */
export class LoraTargetError extends UserError {
  constructor(readonly problem: string) {
    super(`lora_target ${problem}`);
  }
}

/**
 * lora_target (LLaMA-Factory's key, PEFT's target_modules): 'all' or a comma list (or array) of projection names;
 * returned in PROJECTIONS order without repeats.
 */
export function parseLoraTargets(spec: string | readonly string[]): Projection[] {
  const items = (typeof spec === 'string' ? spec.split(',') : spec).map((s) => s.trim()).filter(Boolean);
  if (items.length === 1 && items[0] === 'all') return [...PROJECTIONS];
  const unknown = items.filter((m) => !(PROJECTIONS as readonly string[]).includes(m));
  if (items.length === 0 || unknown.length > 0) {
    throw new LoraTargetError(`must be 'all' or a comma list of ${PROJECTIONS.join(', ')}${unknown.length ? ` (unknown: ${unknown.join(', ')})` : ''}`);
  }
  return PROJECTIONS.filter((p) => items.includes(p));
}

/** One layer's tensors as values of type M (matrices) and V (vectors): what the family's recipe has. */
export type LayerOf<M, V> = { proj: Record<Projection, M>; inputNorm: V; postAttnNorm: V } & { [K in LayerVectorKey]?: V };

/** A model's tensors as M and V; `lmHead` is the same value as `embed` when the embeddings are tied. */
export interface ModelOf<M, V> {
  embed: M;
  lmHead: M;
  finalNorm: V;
  layers: LayerOf<M, V>[];
}

/**
 * Build a model's tensors by walking its tensor table in checkpoint order: `matrix` makes each matrix (shape
 * [rows, cols]) and `vector` each vector. If a call throws, the error propagates; callers release what they made.
 */
export function buildModel<M, V>(c: ModelConfig, matrix: (t: ModelTensor) => M, vector: (t: ModelTensor) => V): ModelOf<M, V> {
  const family = familyOf(c);
  let embed: M | undefined, lmHead: M | undefined, finalNorm: V | undefined;
  const layers = Array.from({ length: c.numLayers }, () => ({ proj: {} }) as LayerOf<M, V>);
  for (const t of modelTensors(c)) {
    if (t.projection) layers[t.layer!]!.proj[t.projection] = matrix(t);
    else if (t.vector) layers[t.layer!]![t.vector] = vector(t);
    else if (t.hf === family.embed.hf) embed = matrix(t);
    else if (t.hf === family.lmHead.hf) lmHead = matrix(t);
    else finalNorm = vector(t);
  }
  return { embed: embed!, lmHead: lmHead ?? embed!, finalNorm: finalNorm!, layers };
}

/** Weights in the model (the embeddings once when tied): what a size label such as "0.6B" counts. */
export function modelParameterCount(c: ModelConfig): number {
  return modelTensors(c).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}
