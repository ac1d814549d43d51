import cliProgress from 'cli-progress';
import { loadTrainConfig } from '../train/config.js';
import { trainFromConfig, type RunHooks } from '../train/run.js';
import { uploadQuantizer } from '../gguf/upload-quantize.js';
import type { LogEntry } from '../train/logger.js';

/** A console progress bar fed by the trainer's hooks; call stop() when training ends (or fails). */
export function trainProgressBar(): { hooks: RunHooks; stop(): void } {
  const bar = new cliProgress.SingleBar({
    format: 'train |{bar}| {value}/{total} steps | loss {loss} | lr {lr} | {tps} tok/s | ETA {eta_formatted}',
    hideCursor: true,
    etaBuffer: 20,
  }, cliProgress.Presets.shades_classic);
  bar.start(1, 0, { loss: '-', lr: '-', tps: '-' });
  return {
    hooks: {
      onStep: (done, total) => {
        bar.setTotal(total);
        bar.update(done);
      },
      onLog: (e: LogEntry) => bar.update({ loss: e.loss.toFixed(4), lr: e.lr.toExponential(2), tps: e.tokens_per_second.toFixed(0) }),
    },
    stop: () => bar.stop(),
  };
}

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
  return 0;
}
