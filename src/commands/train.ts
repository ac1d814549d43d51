import { exportAfterTraining, loadTrainConfig } from '../train/config.js';
import { trainProgressBar } from '../train/progress-bar.js';
import { trainFromConfig } from '../train/run.js';
import { uploadQuantizer } from '../gguf/upload-quantize.js';

/** `loraforge train [config.yaml] [--key value ...]`; without arguments, the embedded default job. */
export async function trainCommand(args: string[]): Promise<number> {
  if (args.length === 0) return (await import('../train/default-job.js')).runDefaultJob();
  const { config, warnings } = loadTrainConfig(args);
  for (const w of warnings) console.warn(`warning: ${w}`);
  const progress = trainProgressBar();
  const bits = config.quantization_bit;
  const load = bits ? { quantizer: (c: Parameters<typeof uploadQuantizer>[1]) => uploadQuantizer(bits, c) } : {};
  const result = await trainFromConfig(config, progress.hooks, load).finally(() => progress.stop());
  const evalLoss = result.log.at(-1)?.eval_loss;
  console.log(`done: ${result.steps} steps, loss ${result.firstLoss.toFixed(4)} -> ${result.finalLoss.toFixed(4)}${evalLoss !== undefined ? `, eval loss ${evalLoss.toFixed(4)}` : ''}; adapter and trainer_log.jsonl in ${config.output_dir}`);
  // A training YAML may ask for an export of the result, as LLaMA-Factory's export keys do.
  // Loaded only then: the exporter's modules (worker pool, WebAssembly quantizer) are not needed otherwise.
  const exportJob = exportAfterTraining(config);
  if (exportJob) for (const f of await (await import('./export.js')).exportWithProgress(exportJob)) console.log(`wrote ${f}`);
  return 0;
}
