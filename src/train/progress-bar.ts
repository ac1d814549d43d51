// The console progress bar of a training run (the train command and the default job), fed by the run's hooks.
import cliProgress from 'cli-progress';
import type { LogEntry } from './logger.js';
import type { RunHooks } from './run.js';

/** Preference stages: the chosen / rejected rewards, their margin and (dpo) accuracy. */
export function rewardsText(e: LogEntry): string {
  const chosen = e['rewards/chosen'], rejected = e['rewards/rejected'];
  if (chosen === undefined || rejected === undefined) return '';
  const accuracy = e['rewards/accuracies'];
  return ` | rewards ${chosen.toFixed(3)}/${rejected.toFixed(3)} margin ${(chosen - rejected).toFixed(3)}${accuracy === undefined ? '' : ` acc ${accuracy.toFixed(2)}`}`;
}

/** A console progress bar fed by the trainer's hooks; call stop() when training ends (or fails). */
export function trainProgressBar(): { hooks: RunHooks; stop(): void } {
  const bar = new cliProgress.SingleBar({
    format: 'train |{bar}| {value}/{total} steps | loss {loss}{rewards} | lr {lr} | {tps} tok/s | ETA {eta_formatted}',
    hideCursor: true,
    etaBuffer: 20,
  }, cliProgress.Presets.shades_classic);
  bar.start(1, 0, { loss: '-', rewards: '', lr: '-', tps: '-' });
  return {
    hooks: {
      onStep: (done, total) => {
        bar.setTotal(total);
        bar.update(done);
      },
      onLog: (e: LogEntry) => bar.update({ loss: e.loss.toFixed(4), rewards: rewardsText(e), lr: e.lr.toExponential(2), tps: e.tokens_per_second.toFixed(0) }),
    },
    stop: () => bar.stop(),
  };
}

