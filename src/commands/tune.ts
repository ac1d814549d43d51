import { createGpu } from '../gpu/device.js';
import { loadModelConfig } from '../model/config.js';
import { resolveModelDir } from '../model/hub.js';
import { loadTrainConfig } from '../train/config.js';
import { tuneForJob } from '../train/kernel-tuning.js';
import { fileTuningStore, userCacheDir } from '../train/tuning-cache.js';

/**
 * `loraforge tune config.yaml [--key value ...]`: time the matmul kernel variants on this GPU at the config's
 * model shapes (per_device_train_batch_size x cutoff_len tokens) and store the choice in the user's cache
 * folder, replacing an earlier one for this adapter and driver. Prints the choices as JSON.
 */
export async function tuneCommand(args: string[]): Promise<number> {
  const { config: cfg, warnings } = loadTrainConfig(args);
  for (const w of warnings) console.warn(`warning: ${w}`);
  const model = loadModelConfig(await resolveModelDir(cfg.model_name_or_path));
  const gpu = await createGpu();
  try {
    const tokens = cfg.per_device_train_batch_size * cfg.cutoff_len;
    const { choices, matrix } = await tuneForJob(gpu, model, tokens, cfg.bf16 ? 'bf16' : 'f32', {
      enabled: true, matrix: cfg.subgroup_matrix, redo: true, store: fileTuningStore(), onProgress: (line) => console.error(line),
    });
    console.log(JSON.stringify({ cache: userCacheDir(), adapter: gpu.adapterInfo.description || gpu.adapterInfo.vendor, choices, matrix: matrix ?? null }));
  } finally {
    gpu.destroy();
  }
  return 0;
}
