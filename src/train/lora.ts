// PEFT LoRA adapter folders on disk (adapter_model.safetensors + adapter_config.json). The adapter itself (GPU
// factors, initialisation, PEFT names and bytes) is in lora-weights.ts, re-exported from here.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Gpu } from '../gpu/device.js';
import type { ModelConfig } from '../model/config.js';
import { Checkpoint, writeSafetensors } from '../model/safetensors.js';
import { fileError } from '../errors.js';
import { loraFromPeft, peftAdapterConfig, peftAdapterTensors, type LoraWeights } from './lora-weights.js';
import { readJsonFile, readJsonObject } from '../json-file.js';
import type { TrainingTemplate } from './serving-template.js';

export * from './lora-weights.js';

/** Load a PEFT LoRA adapter folder onto the GPU. */
export function loadPeftAdapter(gpu: Gpu, dir: string, c: ModelConfig): LoraWeights {
  const cfgFile = path.join(dir, 'adapter_config.json');
  if (!fs.existsSync(cfgFile)) throw fileError(cfgFile, 'not found (an adapter folder needs adapter_config.json and adapter_model.safetensors)');
  const j = readJsonFile(cfgFile);
  const ckpt = Checkpoint.open(path.join(dir, 'adapter_model.safetensors'));
  try {
    return loraFromPeft(gpu, cfgFile, j, ckpt, c);
  } finally {
    ckpt.close();
  }
}

/** Write adapter_model.safetensors and adapter_config.json as PEFT does. */
export async function savePeftAdapter(gpu: Gpu, w: LoraWeights, dir: string, baseModel: string | null): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), await peftAdapterTensors(gpu, w), { format: 'pt' });
  const tmp = path.join(dir, 'adapter_config.json.tmp');
  fs.writeFileSync(tmp, JSON.stringify(peftAdapterConfig(w.settings, baseModel), null, 2) + '\n');
  fs.renameSync(tmp, path.join(dir, 'adapter_config.json'));
}

/** The file in an adapter folder that records the chat template it was trained with (the exporter serves with it). */
export const TRAINING_TEMPLATE_FILE = 'training_template.json';

export function writeTrainingTemplate(dir: string, t: TrainingTemplate): void {
  fs.writeFileSync(path.join(dir, TRAINING_TEMPLATE_FILE), JSON.stringify({ template: t.template, enable_thinking: t.enable_thinking }, null, 2) + '\n');
}

/** The adapter folder's training template, or undefined when it records none (an adapter trained elsewhere). */
export function readTrainingTemplate(dir: string): TrainingTemplate | undefined {
  const file = path.join(dir, TRAINING_TEMPLATE_FILE);
  if (!fs.existsSync(file)) return undefined;
  const j = readJsonObject(file);
  if (j.template !== 'qwen3' && j.template !== 'qwen3_nothink') throw fileError(file, `template must be 'qwen3' or 'qwen3_nothink', got ${JSON.stringify(j.template)}`);
  if (typeof j.enable_thinking !== 'boolean') throw fileError(file, `enable_thinking must be true or false, got ${JSON.stringify(j.enable_thinking)}`);
  return { template: j.template, enable_thinking: j.enable_thinking };
}
