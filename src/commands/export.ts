import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import YAML from 'yaml';
import { createGpu } from '../gpu/device.js';
import { loadModelConfig } from '../model/config.js';
import { Checkpoint } from '../model/safetensors.js';
import { hubRepoIdOfSnapshot, resolveModelDir } from '../model/hub.js';
import { readGguf } from '../model/gguf-format.js';
import { ggufModelConfig } from '../model/gguf-model.js';
import { resolveGgufFile } from '../model/gguf-source.js';
import { fileSource } from '../model/safetensors.js';
import type { ModelConfig } from '../model/family.js';
import type { Gpu } from '../gpu/device.js';
import type { LoraWeights } from '../train/lora.js';
import { loadPeftAdapter, peftAdapterTensors, readTrainingTemplate } from '../train/lora.js';
import { jinjaChatTemplate, ollamaChatTemplate } from '../train/serving-template.js';
import { exportGguf, exportLoraGguf, writeOllamaModelfile } from '../gguf/export.js';
import { mergedTensorSources } from '../gguf/merge.js';
import { exportMergedSafetensors } from '../gguf/hf-export.js';
import { GGUF_PRESETS, isGgufPreset } from '../gguf/presets.js';
import { ggufFileName, ggufNaming } from '../gguf/model-name.js';
import { modelParameterCount } from '../model/families.js';
import { fileError, UserError } from '../errors.js';

const FORMATS = ['gguf', 'gguf-lora', 'safetensors'] as const;
type ExportFormat = (typeof FORMATS)[number];

export interface ExportOptions {
  model_name_or_path: string;
  adapter_name_or_path?: string;
  export_dir: string;
  export_format: ExportFormat;
  export_quantization: string;
  /** Largest safetensors shard, GB. */
  export_size: number;
}

const KEYS = ['model_name_or_path', 'adapter_name_or_path', 'export_dir', 'export_format', 'export_quantization', 'export_size'] as const;

/** Options from an optional YAML (LLaMA-Factory's export keys; other keys ignored) and --key value flags. */
export function parseExportArgs(args: string[]): ExportOptions {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: Object.fromEntries(KEYS.map((k) => [k, { type: 'string' as const }])) });
  } catch (e) {
    throw new UserError(`export: ${(e as Error).message}`);
  }
  const raw: Record<string, unknown> = {};
  const yamlFile = parsed.positionals[0];
  if (yamlFile) {
    if (!fs.existsSync(yamlFile)) throw fileError(yamlFile, 'not found');
    let doc: unknown;
    try {
      doc = YAML.parse(fs.readFileSync(yamlFile, 'utf8'));
    } catch (e) {
      throw fileError(yamlFile, `invalid YAML (${(e as Error).message.split('\n')[0]})`);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw fileError(yamlFile, 'expected a mapping of keys to values');
    for (const k of KEYS) if ((doc as Record<string, unknown>)[k] !== undefined) raw[k] = (doc as Record<string, unknown>)[k];
  }
  for (const k of KEYS) if (parsed.values[k] !== undefined) raw[k] = parsed.values[k];
  const where = yamlFile ?? 'export';
  for (const k of ['model_name_or_path', 'export_dir'] as const) if (typeof raw[k] !== 'string' || !raw[k]) throw new UserError(`${where}: ${k} is required`);
  const format = String(raw.export_format ?? 'gguf');
  if (!(FORMATS as readonly string[]).includes(format)) throw new UserError(`${where}: export_format must be one of ${FORMATS.join(', ')}, got '${format}'`);
  const quant = String(raw.export_quantization ?? 'q8_0').toLowerCase();
  if (format === 'gguf' && !isGgufPreset(quant)) throw new UserError(`${where}: export_quantization must be one of ${GGUF_PRESETS.join(', ')}, got '${quant}'`);
  const size = Number(raw.export_size ?? 5);
  if (!(size > 0)) throw new UserError(`${where}: export_size must be a positive number of GB, got '${raw.export_size}'`);
  if (format === 'gguf-lora' && !raw.adapter_name_or_path) throw new UserError(`${where}: export_format gguf-lora needs adapter_name_or_path`);
  return {
    model_name_or_path: raw.model_name_or_path as string,
    adapter_name_or_path: raw.adapter_name_or_path as string | undefined,
    export_dir: raw.export_dir as string,
    export_format: format as ExportFormat,
    export_quantization: quant,
    export_size: size,
  };
}

function progressBar(label: string): { onProgress: (done: number, total: number) => void; stop: () => void } {
  const bar = new cliProgress.SingleBar({ format: `${label} |{bar}| {percentage}% | {value}/{total} MB | ETA {eta_formatted}`, hideCursor: true }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    onProgress: (done, total) => {
      if (!started) {
        bar.start(Math.max(1, Math.round(total / 1e6)), 0);
        started = true;
      }
      bar.update(Math.round(done / 1e6));
    },
    stop: () => started && bar.stop(),
  };
}

/** Run one export; returns the files written. */
export async function runExport(o: ExportOptions): Promise<string[]> {
  const ggufBase = resolveGgufFile(o.model_name_or_path);
  if (ggufBase) return exportForGgufBase(o, ggufBase);
  const modelDir = await resolveModelDir(o.model_name_or_path);
  const config = loadModelConfig(modelDir);
  fs.mkdirSync(o.export_dir, { recursive: true });
  const ckpt = Checkpoint.open(modelDir);
  const gpu = await createGpu().catch((e: unknown) => {
    ckpt.close();
    throw e;
  });
  const bar = progressBar(`export ${o.export_format}`);
  try {
    const lora = o.adapter_name_or_path ? loadPeftAdapter(gpu, o.adapter_name_or_path, config) : undefined;
    // The converter names a model by its folder; a hub snapshot's folder is a commit, so the repo id stands in for it.
    const modelId = hubRepoIdOfSnapshot(path.resolve(modelDir)) ?? path.basename(path.resolve(modelDir));
    if (o.export_format === 'gguf-lora') return [await writeLoraGguf(gpu, lora!, config, o.export_dir, bar.onProgress)];
    const sources = await mergedTensorSources(gpu, ckpt, config, lora);
    if (o.export_format === 'safetensors') return await exportMergedSafetensors({ modelDir, ckpt, sources, outDir: o.export_dir, maxShardBytes: o.export_size * 1e9, onProgress: bar.onProgress });
    const naming = ggufNaming(modelId, modelParameterCount(config));
    const fileName = ggufFileName(naming, o.export_quantization);
    const file = path.join(o.export_dir, fileName);
    // Served as trained: the adapter's training template becomes the GGUF's chat template and the Modelfile's.
    const trained = o.adapter_name_or_path ? readTrainingTemplate(o.adapter_name_or_path) : undefined;
    await exportGguf({
      outPath: file, config, tokenizerDir: modelDir, tensors: sources, quantization: o.export_quantization as never, naming,
      chatTemplate: trained && jinjaChatTemplate(trained), onProgress: bar.onProgress,
    });
    return [file, writeOllamaModelfile(o.export_dir, fileName, { template: trained && ollamaChatTemplate(trained) })];
  } finally {
    bar.stop();
    ckpt.close();
    await gpu.destroy();
  }
}

/** The adapter as a llama.cpp LoRA GGUF, `<dir>/adapter.gguf`. */
async function writeLoraGguf(gpu: Gpu, lora: LoraWeights, config: ModelConfig, dir: string, onProgress: (done: number, total: number) => void): Promise<string> {
  const r = lora.settings.rank;
  const tensors = (await peftAdapterTensors(gpu, lora)).map((t) => ({ name: t.name, shape: t.shape, read: () => t.data as Float32Array }));
  const file = path.join(dir, 'adapter.gguf');
  // llama.cpp scales by alpha / r; rsLoRA's alpha / sqrt(r) is that with alpha·sqrt(r).
  const alpha = lora.settings.rslora ? lora.settings.alpha * Math.sqrt(r) : lora.settings.alpha;
  await exportLoraGguf({ outPath: file, config, alpha, tensors, onProgress });
  return file;
}

/**
 * A GGUF (or Ollama) base: the adapter as a LoRA GGUF that llama.cpp applies to that same file, and a Modelfile
 * with FROM the base (the Ollama name, or the file's path) and ADAPTER. Merging into a quantized base is not done.
 */
async function exportForGgufBase(o: ExportOptions, baseFile: string): Promise<string[]> {
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
  const bar = progressBar('export gguf-lora');
  try {
    const lora = loadPeftAdapter(gpu, o.adapter_name_or_path!, config);
    const file = await writeLoraGguf(gpu, lora, config, o.export_dir, bar.onProgress);
    const isFile = fs.existsSync(o.model_name_or_path);
    const trained = readTrainingTemplate(o.adapter_name_or_path!);
    const modelfile = writeOllamaModelfile(o.export_dir, path.basename(file), {
      from: isFile ? path.resolve(baseFile) : o.model_name_or_path, adapterFileName: path.basename(file), template: trained && ollamaChatTemplate(trained),
    });
    return [file, modelfile];
  } finally {
    bar.stop();
    gpu.destroy();
  }
}

/** `loraforge export [config.yaml] [--key value ...]`. */
export async function exportCommand(args: string[]): Promise<number> {
  const files = await runExport(parseExportArgs(args));
  for (const f of files) console.log(`wrote ${f}`);
  return 0;
}
