// Quantization presets and the per-tensor type each one gives, following llama.cpp's llama-quantize
// (src/llama-quant.cpp: llama_tensor_get_type, tensor_type_fallback) for a dense model like Qwen3.
import { GgmlType, ggmlBlockSize, isQuantized } from '../gpu/ggml-types.js';
import type { GgufPreset } from '../train/export-options.js';

// The preset names are part of the config's vocabulary (export_quantization), so they live with the export keys.
export { GGUF_PRESETS, isGgufPreset, type GgufPreset } from '../train/export-options.js';

interface PresetInfo {
  /** llama_ftype, written as general.file_type. */
  fileType: number;
  /** The type most 2-D weights get. */
  baseType: GgmlType;
  /** The _M mixes: attn_v and ffn_down of the use_more_bits layers get Q6_K. */
  moreBitsMix: boolean;
}

const PRESETS: Record<GgufPreset, PresetInfo> = {
  f32: { fileType: 0, baseType: GgmlType.F32, moreBitsMix: false },
  f16: { fileType: 1, baseType: GgmlType.F16, moreBitsMix: false },
  bf16: { fileType: 32, baseType: GgmlType.BF16, moreBitsMix: false },
  q8_0: { fileType: 7, baseType: GgmlType.Q8_0, moreBitsMix: false },
  q4_0: { fileType: 2, baseType: GgmlType.Q4_0, moreBitsMix: false },
  q6_k: { fileType: 18, baseType: GgmlType.Q6_K, moreBitsMix: false },
  q5_k_m: { fileType: 17, baseType: GgmlType.Q5_K, moreBitsMix: true },
  q4_k_m: { fileType: 15, baseType: GgmlType.Q4_K, moreBitsMix: true },
};

export function presetFileType(preset: GgufPreset): number {
  return PRESETS[preset].fileType;
}

/** llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between. */
export function useMoreBits(layer: number, numLayers: number): boolean {
  const eighth = Math.trunc(numLayers / 8);
  return layer < eighth || layer >= Math.trunc((7 * numLayers) / 8) || (layer - eighth) % 3 === 2;
}

/** When a row is not a whole number of blocks, llama-quantize falls back to a 32-block type, then F16. */
function fallback(type: GgmlType, rowLength: number): GgmlType {
  if (rowLength % ggmlBlockSize(type) === 0) return type;
  const smaller = type === GgmlType.Q4_K ? GgmlType.Q5_0
    : type === GgmlType.Q5_K ? GgmlType.Q5_1
    : type === GgmlType.Q6_K ? GgmlType.Q8_0
    : type;
  return rowLength % ggmlBlockSize(smaller) === 0 ? smaller : GgmlType.F16;
}

export interface TensorForTyping {
  /** GGUF name (token_embd.weight, blk.3.attn_v.weight, ...). */
  name: string;
  /** ggml dims: ne[0] is the row length. */
  ne: readonly number[];
}

/**
 * The ggml type of each tensor under a preset. `hasOutput` is whether the file has output.weight
 * (without it the embeddings are tied and get the output's type); `numLayers` is the block count.
 */
export function tensorType(preset: GgufPreset, t: TensorForTyping, hasOutput: boolean, numLayers: number): GgmlType {
  const p = PRESETS[preset];
  // 1-D tensors (norms) and *_norm.weight are never converted away from f32.
  if (t.ne.length < 2 || t.name.endsWith('_norm.weight')) return GgmlType.F32;
  if (!isQuantized(p.baseType)) return p.baseType;
  const rowLength = t.ne[0]!;
  let type = p.baseType;
  const isOutput = t.name === 'output.weight' || (!hasOutput && t.name === 'token_embd.weight');
  if (isOutput) {
    if (rowLength % ggmlBlockSize(type) !== 0) type = GgmlType.Q8_0;
    else if (type !== GgmlType.Q8_0) type = GgmlType.Q6_K;
  } else if (p.moreBitsMix) {
    const layer = /^blk\.(\d+)\.(attn_v|ffn_down)\.weight$/.exec(t.name);
    if (layer && useMoreBits(Number(layer[1]), numLayers)) type = GgmlType.Q6_K;
  }
  return fallback(type, rowLength);
}
