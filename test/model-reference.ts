// A plain-TS forward and loss (Qwen3, or Qwen2 by the family's recipe) built only from the kernels' references
// (embeddingRef, rmsnormRef, matmulRef, gemmRef, biasAddRef, ropeRef, attentionRef, swigluRef, crossEntropyRef)
// and plain loops, so that whole-model tests on any shape compare the GPU graph with something independent of its
// recording. Weights and LoRA factors are held as Float32Arrays by their HF / PEFT tensor names (what a checkpoint
// holds and what readLoraTensors returns).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { modelConfigToJson, type ModelConfig } from '../src/model/config.js';
import { writeSafetensors } from '../src/model/safetensors.js';
import { modelTensorShapes } from '../src/model/families.js';
import { bf16ToF32, f32ToBf16 } from '../src/gpu/dtype.js';
import type { LoraSettings } from '../src/train/lora.js';
import type { Projection } from '../src/model/family.js';
import { seededRandom } from '../src/random.js';
import { fillRandom, randomModelTensors, type WeightInit } from '../src/model/random-weights.js';
import { embeddingRef } from '../src/kernels/embedding.js';
import { rmsnormRef } from '../src/kernels/rmsnorm.js';
import { matmulRef } from '../src/kernels/matmul.js';
import { gemmRef } from '../src/kernels/gemm.js';
import { ropeRef } from '../src/kernels/rope.js';
import { attentionRef } from '../src/kernels/attention.js';
import { swigluRef } from '../src/kernels/swiglu.js';
import { biasAddRef } from '../src/kernels/bias-add.js';
import { crossEntropyRef } from '../src/kernels/cross-entropy.js';

/** Model tensors by HF name (model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight, ...). */
export type RefTensors = Map<string, Float32Array>;

export interface RefLora {
  settings: LoraSettings;
  /** A [r, in] and B [out, r] by PEFT name (refPeftName). */
  tensors: Map<string, Float32Array>;
}

/** One packed or plain batch: B rows of T tokens, token n = b*T + t. */
export interface RefBatch {
  B: number;
  T: number;
  ids: Uint32Array;
  positions: Uint32Array;
  segments: Uint32Array;
  /** Next-token targets, -100 = not counted. */
  targets: Int32Array;
}

/**
 * Seeded random weights of every tensor the config implies, from the one generator (src/model/random-weights.ts).
 * Matrices are normal with std `matrixScale`/sqrt(cols) so activations and logits are O(1) (attention and the
 * loss are far from uniform, which makes comparisons sharp); norm weights are uniform 1 ± 0.3, biases 0 ± 0.3.
 */
export function randomQwen3Tensors(config: ModelConfig, seed: number, matrixScale = 1): RefTensors {
  const init: WeightInit = (t) => t.kind === 'matrix'
    ? { shape: 'normal', mean: 0, std: matrixScale / Math.sqrt(t.shape[1]!) }
    : { shape: 'uniform', mean: t.kind === 'norm' ? 1 : 0, halfWidth: 0.3 };
  return new Map(randomModelTensors(config, seed, init).map(({ tensor, values }) => [tensor.hf, values]));
}

/** Write `dir/config.json` and an F32 `dir/model.safetensors` holding the tensors, as an HF folder. */
export function writeQwen3Folder(dir: string, config: ModelConfig, tensors: RefTensors): void {
  fs.mkdirSync(dir, { recursive: true });
  const shapes = [...modelTensorShapes(config)];
  writeSafetensors(path.join(dir, 'model.safetensors'), shapes.map(([name, shape]) => ({ name, dtype: 'F32' as const, shape, data: get(tensors, name) })));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(modelConfigToJson(config)));
}

/** The same tensors with every matrix rounded to bf16 (what a bf16 upload holds); norm vectors stay f32. */
export function roundMatricesToBf16(config: ModelConfig, tensors: RefTensors): RefTensors {
  const shapes = modelTensorShapes(config);
  return new Map([...tensors].map(([name, v]) => [name, shapes.get(name)!.length === 2 ? v.map((x) => bf16ToF32(f32ToBf16(x))) : v]));
}

/**
 * Seeded random LoRA factors with non-zero B (std `scale`·1/sqrt(fan-in) for both), rounded to multiples of
 * 2^-12 so that finite-difference steps of a power of two move them exactly in f32.
 */
export function randomRefLora(config: ModelConfig, settings: LoraSettings, seed: number, scale = 1): RefLora {
  const next = seededRandom(seed);
  const factor = (length: number, fanIn: number) => {
    const values = new Float32Array(length);
    fillRandom(values, next, { shape: 'normal', mean: 0, std: scale / Math.sqrt(fanIn) });
    return values.map((x) => Math.round(x * 4096) / 4096);
  };
  const tensors = new Map<string, Float32Array>();
  for (let l = 0; l < config.numLayers; l++) {
    for (const p of settings.targets) {
      const [inDim, outDim] = refProjectionDims(config, p);
      const r = settings.rank;
      tensors.set(refPeftName(l, p, 'A'), factor(r * inDim, inDim));
      tensors.set(refPeftName(l, p, 'B'), factor(outDim * r, r));
    }
  }
  return { settings, tensors };
}

// The LoRA facts below are written out here, not imported from src/: a reference must not share the code it
// checks (the scale of rsLoRA and of alpha != 2r, the tensor names and the factor shapes).

/** [in, out] of projection p: q/o span heads·head_dim, k/v kv_heads·head_dim, the MLP the intermediate size. */
function refProjectionDims(c: ModelConfig, p: Projection): [number, number] {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const dims: Record<Projection, [number, number]> = {
    q_proj: [c.hiddenSize, q], k_proj: [c.hiddenSize, kv], v_proj: [c.hiddenSize, kv], o_proj: [q, c.hiddenSize],
    gate_proj: [c.hiddenSize, c.intermediateSize], up_proj: [c.hiddenSize, c.intermediateSize], down_proj: [c.intermediateSize, c.hiddenSize],
  };
  return dims[p];
}

/** The HF module of a projection in a decoder layer (Qwen3 and Qwen2.5 alike): self_attn.q_proj, mlp.up_proj, ... */
function refModulePath(p: Projection): string {
  return `${p === 'gate_proj' || p === 'up_proj' || p === 'down_proj' ? 'mlp' : 'self_attn'}.${p}`;
}

/** PEFT's file name of a LoRA factor (adapter_model.safetensors). */
export function refPeftName(layer: number, p: Projection, factor: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${refModulePath(p)}.lora_${factor}.weight`;
}

/** The layer's optional ops: Qwen2 (Qwen2.5) has q/k/v biases and no Q/K norm; Qwen3 the reverse. */
function refRecipe(c: ModelConfig): { qkNorm: boolean; qkvBias: boolean } {
  return c.modelType === 'qwen2' ? { qkNorm: false, qkvBias: true } : { qkNorm: true, qkvBias: false };
}

/** PEFT's LoRA scaling: lora_alpha / sqrt(r) with use_rslora (rank-stabilised LoRA), lora_alpha / r otherwise. */
export function refLoraScale(s: Pick<LoraSettings, 'rank' | 'alpha' | 'rslora'>): number {
  return s.rslora ? s.alpha / Math.sqrt(s.rank) : s.alpha / s.rank;
}

function get(tensors: RefTensors, name: string): Float32Array {
  const t = tensors.get(name);
  if (!t) throw new Error(`reference: no tensor ${name}`);
  return t;
}

/** What the LoRA path of layer l's projection p reads instead of its input x [N, in] (e.g. x with dropout). */
export type LoraInputRef = (l: number, p: Projection, x: Float32Array) => Float32Array;

/** Final-norm hidden states [N, H] and logits [N, V] of the batch. */
export function qwen3ForwardRef(config: ModelConfig, w: RefTensors, lora: RefLora | undefined, batch: RefBatch, loraInput?: LoraInputRef): { final: Float32Array; logits: Float32Array } {
  const c = config;
  const N = batch.B * batch.T;
  const H = c.hiddenSize;
  const eps = c.rmsNormEps;
  // y = x·Wᵀ + s·(x'·Aᵀ)·Bᵀ for adapted projections, x' = loraInput(x) or x.
  const project = (l: number, p: Projection, x: Float32Array): Float32Array => {
    const [inDim, outDim] = refProjectionDims(c, p);
    const y = matmulRef(x, get(w, `model.layers.${l}.${refModulePath(p)}.weight`), N, outDim, inDim);
    if (!lora || !lora.settings.targets.includes(p)) return y;
    const r = lora.settings.rank;
    const t = gemmRef(loraInput ? loraInput(l, p, x) : x, get(lora.tensors, refPeftName(l, p, 'A')), undefined, N, r, inDim, { transB: true });
    return gemmRef(t, get(lora.tensors, refPeftName(l, p, 'B')), y, N, outDim, r, { transB: true, alpha: refLoraScale(lora.settings), beta: 1 });
  };
  const add = (a: Float32Array, b: Float32Array) => a.map((v, i) => v + b[i]!);
  const recipe = refRecipe(c);

  let x = embeddingRef(batch.ids, get(w, 'model.embed_tokens.weight'), H);
  for (let l = 0; l < c.numLayers; l++) {
    const pre = `model.layers.${l}.`;
    const h1 = rmsnormRef(x, get(w, pre + 'input_layernorm.weight'), N, H, eps).y;
    // Qwen2: q/k/v biases; Qwen3: per-head RMSNorm of q and k. Then RoPE.
    const biased = (p: 'q_proj' | 'k_proj' | 'v_proj', y: Float32Array) =>
      recipe.qkvBias ? biasAddRef(y, get(w, `${pre}self_attn.${p}.bias`), N, y.length / N) : y;
    const qRaw = biased('q_proj', project(l, 'q_proj', h1));
    const kRaw = biased('k_proj', project(l, 'k_proj', h1));
    const v = biased('v_proj', project(l, 'v_proj', h1));
    const qNormed = recipe.qkNorm ? rmsnormRef(qRaw, get(w, pre + 'self_attn.q_norm.weight'), N * c.numHeads, c.headDim, eps).y : qRaw;
    const kNormed = recipe.qkNorm ? rmsnormRef(kRaw, get(w, pre + 'self_attn.k_norm.weight'), N * c.numKvHeads, c.headDim, eps).y : kRaw;
    const q = ropeRef(qNormed, batch.positions, N, c.numHeads, c.headDim, c.ropeTheta);
    const k = ropeRef(kNormed, batch.positions, N, c.numKvHeads, c.headDim, c.ropeTheta);
    const attn = attentionRef(q, k, v, batch.segments, batch.segments, {
      B: batch.B, Tq: batch.T, Tk: batch.T, qStart: 0, nHeads: c.numHeads, nKv: c.numKvHeads, headDim: c.headDim,
    }).out;
    const x2 = add(x, project(l, 'o_proj', attn));
    const h2 = rmsnormRef(x2, get(w, pre + 'post_attention_layernorm.weight'), N, H, eps).y;
    const act = swigluRef(project(l, 'gate_proj', h2), project(l, 'up_proj', h2));
    x = add(x2, project(l, 'down_proj', act));
  }
  const final = rmsnormRef(x, get(w, 'model.norm.weight'), N, H, eps).y;
  const lmHead = get(w, c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  return { final, logits: matmulRef(final, lmHead, N, c.vocabSize, H) };
}

/** Mean cross-entropy over the counted targets. */
export function qwen3LossRef(config: ModelConfig, w: RefTensors, lora: RefLora | undefined, batch: RefBatch, loraInput?: LoraInputRef): number {
  const { logits } = qwen3ForwardRef(config, w, lora, batch, loraInput);
  return crossEntropyRef(logits, batch.targets, batch.B * batch.T, config.vocabSize).loss;
}
