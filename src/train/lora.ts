// PEFT LoRA adapter folders on disk (adapter_model.safetensors + adapter_config.json). The adapter itself (GPU
// factors, initialisation, PEFT names and bytes) is in lora-weights.ts, re-exported from here.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Gpu } from '../gpu/device.js';
import type { Qwen3Config } from '../model/config.js';
import { Checkpoint, writeSafetensors } from '../model/safetensors.js';
import { fileError } from '../errors.js';
import { loraFromPeft, peftAdapterConfig, peftAdapterTensors, type LoraWeights } from './lora-weights.js';
import { readJsonFile } from '../json-file.js';

export * from './lora-weights.js';

/** Load a PEFT LoRA adapter folder onto the GPU. */
export function loadPeftAdapter(gpu: Gpu, dir: string, c: Qwen3Config): LoraWeights {
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
