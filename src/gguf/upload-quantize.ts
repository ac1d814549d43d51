// LLaMA-Factory's `quantization_bit` on a Hugging Face base without bitsandbytes: each matrix is quantized by our
// quantizer while it is uploaded, to the ggml type llama.cpp would give it (8: Q8_0; 4: the q4_k_m mix, Q4_K with
// Q6_K for the output and the use_more_bits layers' attn_v / ffn_down, and llama-quantize's fallbacks for rows
// that are not whole blocks), and stays in that block format on the GPU.
import { dtypeOfGgmlType, type MatrixDType } from '../gpu/matrix.js';
import type { GgmlType } from '../gpu/ggml-types.js';
import { modelTensors, type ModelTensor } from '../model/families.js';
import type { ModelConfig } from '../model/family.js';
import type { MatrixQuantizer } from '../model/weights.js';
import { tensorType, type GgufPreset } from './presets.js';
import { quantizeRows } from './quantize.js';

const PRESET_OF_BITS: Record<4 | 8, GgufPreset> = { 8: 'q8_0', 4: 'q4_k_m' };

/** The ggml type llama-quantize gives each matrix of this model under `preset`. */
export function presetTensorType(preset: GgufPreset, config: ModelConfig): (t: ModelTensor) => GgmlType {
  return (t) => tensorType(preset, { name: t.gguf, ne: [...t.shape].reverse() }, !config.tieWordEmbeddings, config.numLayers);
}

export function uploadQuantizer(bits: 4 | 8, config: ModelConfig): MatrixQuantizer {
  return { type: presetTensorType(PRESET_OF_BITS[bits], config), quantize: quantizeRows };
}

/** Each matrix's dtype on the GPU for a base of this preset, by HF name (what the memory plan counts). */
export function presetMatrixDtypes(preset: GgufPreset, config: ModelConfig): (hfName: string) => MatrixDType {
  const typeOf = presetTensorType(preset, config);
  const dtypes = new Map(modelTensors(config).filter((t) => t.kind === 'matrix').map((t) => [t.hf, dtypeOfGgmlType(typeOf(t))!] as const));
  return (name) => dtypes.get(name)!;
}
