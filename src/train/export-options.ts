// What an export is asked for, as LLaMA-Factory's export keys name it: the values config.ts accepts for those
// keys and the options the exporter (src/gguf/export-job.ts) takes. No Node API here, so the GGUF code that the
// browser bundles can name its presets from this list.

export const EXPORT_FORMATS = ['gguf', 'gguf-lora', 'safetensors'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** llama.cpp's quantization presets that the GGUF writer makes (src/gguf/presets.ts gives each its tensor types). */
export const GGUF_PRESETS = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q6_k', 'q5_k_m', 'q4_k_m'] as const;
export type GgufPreset = (typeof GGUF_PRESETS)[number];

export function isGgufPreset(s: string): s is GgufPreset {
  return (GGUF_PRESETS as readonly string[]).includes(s);
}

export interface ExportOptions {
  model_name_or_path: string;
  /** A PEFT adapter merged into the base (gguf, safetensors) or converted alone (gguf-lora). */
  adapter_name_or_path?: string;
  export_dir: string;
  export_format: ExportFormat;
  export_quantization: GgufPreset;
  /** Largest safetensors shard, GB. */
  export_size: number;
}
