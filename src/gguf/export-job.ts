// One export job, as the export command, a training YAML with export keys and the library run it: resolve the
// base model, merge the adapter on the GPU (or take the adapter alone), write GGUF or safetensors files.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createGpu, type Gpu } from '../gpu/device.js';
import { loadModelConfig } from '../model/config.js';
import type { ModelConfig } from '../model/family.js';
import { readGguf } from '../model/gguf-format.js';
import { ggufModelConfig } from '../model/gguf-model.js';
import { resolveGgufFile } from '../model/gguf-source.js';
import { Checkpoint, fileSource } from '../model/safetensors.js';
import { hubRepoIdOfSnapshot, resolveModelDir } from '../model/hub.js';
import type { ExportOptions } from '../train/export-options.js';
import { loadPeftAdapter, peftAdapterTensors, readTrainingTemplate, type LoraWeights } from '../train/lora.js';
import { jinjaChatTemplate, ollamaChatTemplate } from '../train/serving-template.js';
import { exportGguf, exportLoraGguf, writeOllamaModelfile } from './export.js';
import { mergedTensorSources } from './merge.js';
import { exportMergedSafetensors } from './hf-export.js';
import { ggufFileName, ggufNaming } from './model-name.js';
import { modelParameterCount } from '../model/families.js';
import { UserError } from '../errors.js';

export type { ExportOptions } from '../train/export-options.js';

export interface ExportHooks {
  /** Bytes written so far of the total, as the writer goes. */
  onProgress?: (done: number, total: number) => void;
}

/** Run one export; returns the files written. */
export async function runExport(o: ExportOptions, hooks: ExportHooks = {}): Promise<string[]> {
  const ggufBase = resolveGgufFile(o.model_name_or_path);
  if (ggufBase) return exportForGgufBase(o, ggufBase, hooks);
  const modelDir = await resolveModelDir(o.model_name_or_path);
  const config = loadModelConfig(modelDir);
  fs.mkdirSync(o.export_dir, { recursive: true });
  const ckpt = Checkpoint.open(modelDir);
  const gpu = await createGpu().catch((e: unknown) => {
    ckpt.close();
    throw e;
  });
  try {
    const lora = o.adapter_name_or_path ? loadPeftAdapter(gpu, o.adapter_name_or_path, config) : undefined;
    // The converter names a model by its folder; a hub snapshot's folder is a commit, so the repo id stands in for it.
    const modelId = hubRepoIdOfSnapshot(path.resolve(modelDir)) ?? path.basename(path.resolve(modelDir));
    if (o.export_format === 'gguf-lora') return [await writeLoraGguf(gpu, lora!, config, o.export_dir, hooks)];
    const sources = await mergedTensorSources(gpu, ckpt, config, lora);
    if (o.export_format === 'safetensors') return await exportMergedSafetensors({ modelDir, ckpt, sources, outDir: o.export_dir, maxShardBytes: o.export_size * 1e9, onProgress: hooks.onProgress });
    const naming = ggufNaming(modelId, modelParameterCount(config));
    const fileName = ggufFileName(naming, o.export_quantization);
    const file = path.join(o.export_dir, fileName);
    // Served as trained: the adapter's training template becomes the GGUF's chat template and the Modelfile's.
    const trained = o.adapter_name_or_path ? readTrainingTemplate(o.adapter_name_or_path) : undefined;
    await exportGguf({
      outPath: file, config, tokenizerDir: modelDir, tensors: sources, quantization: o.export_quantization, naming,
      chatTemplate: trained && jinjaChatTemplate(trained), onProgress: hooks.onProgress,
    });
    return [file, writeOllamaModelfile(o.export_dir, fileName, { template: trained && ollamaChatTemplate(trained) })];
  } finally {
    ckpt.close();
    await gpu.destroy();
  }
}

/** The adapter as a llama.cpp LoRA GGUF, `<dir>/adapter.gguf`. */
async function writeLoraGguf(gpu: Gpu, lora: LoraWeights, config: ModelConfig, dir: string, hooks: ExportHooks): Promise<string> {
  const r = lora.settings.rank;
  const tensors = (await peftAdapterTensors(gpu, lora)).map((t) => ({ name: t.name, shape: t.shape, read: () => t.data as Float32Array }));
  const file = path.join(dir, 'adapter.gguf');
  // llama.cpp scales by alpha / r; rsLoRA's alpha / sqrt(r) is that with alpha·sqrt(r).
  const alpha = lora.settings.rslora ? lora.settings.alpha * Math.sqrt(r) : lora.settings.alpha;
  await exportLoraGguf({ outPath: file, config, alpha, tensors, onProgress: hooks.onProgress });
  return file;
}

/**
 * A GGUF (or Ollama) base: the adapter as a LoRA GGUF that llama.cpp applies to that same file, and a Modelfile
 * with FROM the base (the Ollama name, or the file's path) and ADAPTER. Merging into a quantized base is not done.
 */
async function exportForGgufBase(o: ExportOptions, baseFile: string, hooks: ExportHooks): Promise<string[]> {
  if (o.export_format !== 'gguf-lora') {
    throw new UserError(`export_format ${o.export_format}: ${o.model_name_or_path} is a GGUF base; its adapter exports as gguf-lora (applied to the same file), merging into a quantized base is not supported`);
  }
  const source = fileSource(baseFile);
  let config: ModelConfig;
  try {
    config = ggufModelConfig(readGguf(source, baseFile));
  } finally {
    source.close?.();
  }
  fs.mkdirSync(o.export_dir, { recursive: true });
  const gpu = await createGpu();
  try {
    const lora = loadPeftAdapter(gpu, o.adapter_name_or_path!, config);
    const file = await writeLoraGguf(gpu, lora, config, o.export_dir, hooks);
    const isFile = fs.existsSync(o.model_name_or_path);
    const trained = readTrainingTemplate(o.adapter_name_or_path!);
    const modelfile = writeOllamaModelfile(o.export_dir, path.basename(file), {
      from: isFile ? path.resolve(baseFile) : o.model_name_or_path, adapterFileName: path.basename(file), template: trained && ollamaChatTemplate(trained),
    });
    return [file, modelfile];
  } finally {
    await gpu.destroy();
  }
}
