// `loraforge export`: the export keys from a YAML and the command line (config.ts), the job (gguf/export-job.ts)
// with a progress bar.
import cliProgress from 'cli-progress';
import { runExport } from '../gguf/export-job.js';
import { loadExportConfig } from '../train/config.js';
import type { ExportOptions } from '../train/export-options.js';

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

/** Run one export with a progress bar on the console; returns the files written. */
export async function exportWithProgress(o: ExportOptions): Promise<string[]> {
  const bar = progressBar(`export ${o.export_format}`);
  try {
    return await runExport(o, { onProgress: bar.onProgress });
  } finally {
    bar.stop();
  }
}

/** `loraforge export [config.yaml] [--key value ...]`. */
export async function exportCommand(args: string[]): Promise<number> {
  const { config, warnings } = loadExportConfig(args);
  for (const w of warnings) console.warn(`warning: ${w}`);
  const files = await exportWithProgress(config);
  for (const f of files) console.log(`wrote ${f}`);
  return 0;
}
