// Export a model (or a LoRA adapter alone) as GGUF files for llama.cpp / Ollama, with the tokenizer
// from the model folder, and Ollama's Modelfile. The GGUF contents are built in model-gguf.ts (re-exported).
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { GgufNaming } from './model-name.js';
import type { GgufPreset } from './presets.js';
import { QuantizePool } from './quantize-pool.js';
import { loraGguf, modelGguf, type LoraGgufOptions, type SlabQuantizer, type SourceTensor } from './model-gguf.js';
import { tokenizerMetadata } from './tokenizer-metadata.js';
import { gv, writeGguf } from './writer.js';

export * from './model-gguf.js';

export interface ExportGgufOptions {
  outPath: string;
  config: ModelConfig;
  /** Folder with tokenizer.json and tokenizer_config.json. */
  tokenizerDir: string;
  tensors: SourceTensor[];
  quantization: GgufPreset;
  /** general.name; defaults to the family's name. Ignored when `naming` is given. */
  name?: string;
  /** general.name, basename, size_label, ... as llama.cpp's converter derives them (ggufNaming). */
  naming?: GgufNaming;
  onProgress?: (done: number, total: number) => void;
  /** Worker threads that quantize; defaults to os.availableParallelism(). 1 quantizes on this thread. */
  threads?: number;
  /** tokenizer.chat_template instead of the tokenizer's own (jinjaChatTemplate of the training template). */
  chatTemplate?: string;
}

/** Node loads the worker only as compiled JavaScript; from the TypeScript sources (under vitest) it quantizes on this thread. */
const WORKERS_LOADABLE = !import.meta.url.endsWith('.ts');

/** Run `write` with a pool of `threads` quantizing workers (none for 1 thread), closed afterwards. */
async function withQuantizer(threads: number, write: (quantizer?: SlabQuantizer) => Promise<void>): Promise<void> {
  if (threads <= 1 || !WORKERS_LOADABLE) return write(undefined);
  const pool = new QuantizePool(threads);
  try {
    await write(pool);
  } finally {
    await pool.close();
  }
}

/** Write a model as a GGUF file llama.cpp loads. */
export async function exportGguf(o: ExportGgufOptions): Promise<void> {
  const tokenizer = tokenizerMetadata(o.tokenizerDir, o.config).filter(([k]) => o.chatTemplate === undefined || k !== 'tokenizer.chat_template');
  if (o.chatTemplate !== undefined) tokenizer.push(['tokenizer.chat_template', gv.str(o.chatTemplate)]);
  await withQuantizer(o.threads ?? availableParallelism(), async (quantizer) => {
    const contents = modelGguf({ config: o.config, tokenizer, tensors: o.tensors, quantization: o.quantization, name: o.name, naming: o.naming, quantizer });
    await writeGguf(o.outPath, { ...contents, onProgress: o.onProgress });
  });
}

export interface ExportLoraGgufOptions extends LoraGgufOptions {
  outPath: string;
  onProgress?: (done: number, total: number) => void;
}

/** Write a PEFT LoRA adapter as a llama.cpp LoRA GGUF (see loraGguf). */
export async function exportLoraGguf(o: ExportLoraGgufOptions): Promise<void> {
  await writeGguf(o.outPath, { ...loraGguf(o), onProgress: o.onProgress });
}

export interface ModelfileOptions {
  /** FROM: a model file elsewhere or an Ollama model name, instead of the GGUF written beside the Modelfile. */
  from?: string;
  /** A LoRA GGUF next to the model, applied by Ollama (ADAPTER). */
  adapterFileName?: string;
  /** Default system prompt. */
  system?: string;
  /** The TEMPLATE (ollamaChatTemplate of the training template); by default plain ChatML. */
  template?: string;
}

/** Qwen3's ChatML turn format as an Ollama (Go) template. */
const CHATML_TEMPLATE = `{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
`;

/**
 * Write `<dir>/<GGUF name>.Modelfile` for `ollama create NAME -f FILE`, pointing at the GGUF in the same folder (one per
 * GGUF, so that two quantizations exported to one folder keep theirs). Returns its path.
 */
export function writeOllamaModelfile(dir: string, ggufFileName: string, o: ModelfileOptions = {}): string {
  const quote = (s: string): string => {
    if (s.includes('"""')) throw new UserError(`cannot write a Modelfile: text contains """: ${s.slice(0, 40)}`);
    return `"""${s}"""`;
  };
  const lines = [`FROM ${o.from ?? `./${ggufFileName}`}`];
  if (o.adapterFileName) lines.push(`ADAPTER ./${o.adapterFileName}`);
  lines.push(`TEMPLATE ${quote(o.template ?? CHATML_TEMPLATE)}`);
  if (o.system !== undefined) lines.push(`SYSTEM ${quote(o.system)}`);
  lines.push('PARAMETER stop "<|im_start|>"', 'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"');
  const path = join(dir, `${ggufFileName.replace(/\.gguf$/i, '')}.Modelfile`);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}
