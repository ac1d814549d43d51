/// <reference types="@webgpu/types" preserve="true" />
// loraforge as a library (the package's main export): load a model, train LoRA, export, generate and chat, with
// the same configuration keys, defaults and errors as the CLI. The verbs below are the short path; the building
// blocks they use are exported too.
import type { Gpu } from './gpu/device.js';
import type { WeightDType } from './gpu/matrix.js';
import { chatReply, chatStopIds, generateText, type ChatTurnOptions } from './model/chat.js';
import { DEFAULT_SAMPLING, Generator, type SamplingOptions } from './model/generate.js';
import type { ChatMessage } from './model/tokenizer.js';
import { releaseModelWeights } from './model/weights.js';
import { runExport, type ExportHooks } from './gguf/export-job.js';
import { exportAfterTraining, loadExportConfig, loadTrainConfig } from './train/config.js';
import { loadPeftAdapter, releaseLora, type LoraWeights } from './train/lora.js';
import { loadModel as loadTrainingModel, trainFromConfig, type LoadedModel, type RunHooks, type RunResult } from './train/run.js';

export { createGpu, NoWebGpuError, type Gpu, type GpuOptions } from './gpu/device.js';
export type { WeightDType } from './gpu/matrix.js';
export { UserError } from './errors.js';
export { loadExportConfig, loadTrainConfig, exportAfterTraining, SUPPORTED_KEYS, type ConfigInput, type TrainConfig } from './train/config.js';
export { EXPORT_FORMATS, GGUF_PRESETS, type ExportFormat, type ExportOptions, type GgufPreset } from './train/export-options.js';
export { runTraining, trainFromConfig, type LoadedModel, type RunHooks, type RunResult } from './train/run.js';
export type { LogEntry } from './train/logger.js';
export { loadPeftAdapter, savePeftAdapter, releaseLora, type LoraWeights } from './train/lora.js';
export { runExport, type ExportHooks } from './gguf/export-job.js';
export { DEFAULT_SAMPLING, Generator, type SamplingOptions } from './model/generate.js';
export { chatReply, chatStopIds, generateText, type ChatTurnOptions } from './model/chat.js';
export { Tokenizer, type ChatMessage } from './model/tokenizer.js';
export type { ModelConfig } from './model/config.js';

/**
 * Train a LoRA adapter: `options` are the training YAML's keys (LLaMA-Factory's names; see SUPPORTED_KEYS), with
 * the CLI's defaults. The adapter is written to `output_dir`; with `export_dir` the result is exported too.
 */
export async function train(options: Record<string, unknown>, hooks: RunHooks = {}): Promise<TrainResult> {
  const { config, warnings } = loadTrainConfig({ values: options, source: 'train options' });
  const result = await trainFromConfig(config, hooks);
  const exportJob = exportAfterTraining(config);
  return { ...result, warnings, exported: exportJob ? await runExport(exportJob) : [] };
}

export interface TrainResult extends RunResult {
  /** Keys that were ignored or have no effect here (the CLI prints these). */
  warnings: string[];
  /** Files written by the export at the end (export_dir set), else []. */
  exported: string[];
}

/** Export a model (with an adapter merged, or the adapter alone): the export YAML's keys. Returns the files written. */
export async function exportModel(options: Record<string, unknown>, hooks: ExportHooks = {}): Promise<string[]> {
  return runExport(loadExportConfig({ values: options, source: 'export options' }).config, hooks);
}

export interface LoadModelOptions {
  /** A PEFT adapter folder applied on top of the base weights. */
  adapter?: string;
  /** Base weights on the GPU in bf16 (half the memory) or f32 (default). */
  dtype?: WeightDType;
  /** Longest conversation in tokens (the KV cache), default 2048. */
  maxLength?: number;
  /** A device to use (created otherwise, and destroyed by close()). */
  gpu?: Gpu;
}

/** A model on the GPU, ready to generate: from `loadModel`. */
export interface Model extends LoadedModel {
  lora: LoraWeights | undefined;
  /** Continue raw text (no chat template); stops at end-of-text. */
  generate(prompt: string, options?: Partial<SamplingOptions> & { onText?: (piece: string) => void }): Promise<string>;
  /** The assistant's reply to `messages`, through the model's chat template. */
  chat(messages: ChatMessage[], options?: ChatTurnOptions): Promise<string>;
  /** Free the weights, the adapter and the cache (and destroy the device, if loadModel created it). */
  close(): Promise<void>;
}

/** Load a model (a local Hugging Face folder or a hub id) and, optionally, a LoRA adapter, for generation. */
export async function loadModel(modelNameOrPath: string, o: LoadModelOptions = {}): Promise<Model> {
  const loaded = await loadTrainingModel(modelNameOrPath, o.dtype === 'bf16', o.gpu);
  const { gpu, config, weights, tokenizer } = loaded;
  let lora: LoraWeights | undefined;
  let generator: Generator;
  try {
    lora = o.adapter !== undefined ? loadPeftAdapter(gpu, o.adapter, config) : undefined;
    generator = new Generator(gpu, config, weights, lora, o.maxLength ?? 2048);
  } catch (e) {
    // A bad adapter folder must not leave the device behind (a live Dawn device keeps the process from exiting).
    if (lora) releaseLora(gpu, lora);
    releaseModelWeights(gpu, weights);
    if (!o.gpu) await gpu.destroy();
    throw e;
  }
  return {
    ...loaded,
    lora,
    generate: (prompt, { onText, ...sampling } = {}) =>
      generateText(generator, tokenizer, tokenizer.encode(prompt), { ...DEFAULT_SAMPLING, stopIds: chatStopIds(tokenizer), ...sampling }, onText),
    chat: (messages, options) => chatReply(generator, tokenizer, messages, options),
    close: async () => {
      generator.destroy();
      if (lora) releaseLora(gpu, lora);
      releaseModelWeights(gpu, weights);
      if (!o.gpu) await gpu.destroy();
    },
  };
}
