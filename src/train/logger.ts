// trainer_log.jsonl (one JSON object per logging step, LLaMA-Factory's names) and the loss curve.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lossCurveSvg, rewardsCurveSvg } from './plot.js';
import type { LogEntry } from './loop.js';

export type { LogEntry } from './loop.js';

export class TrainLogger {
  readonly entries: LogEntry[] = [];
  private readonly file: string;

  constructor(readonly outputDir: string, readonly totalSteps: number) {
    this.file = path.join(outputDir, 'trainer_log.jsonl');
  }

  /** Continue a resumed run's log: rewrite the file with the history saved in the checkpoint. */
  restore(history: LogEntry[]): void {
    this.entries.push(...history);
    fs.writeFileSync(this.file, history.map((e) => JSON.stringify(e) + '\n').join(''));
  }

  log(entry: LogEntry): void {
    this.entries.push(entry);
    fs.appendFileSync(this.file, JSON.stringify(entry) + '\n');
  }

  /** Write the loss curve (training_loss.svg) when asked, and for the preference stages the rewards (training_rewards.svg). */
  finish(plot: boolean): void {
    if (!plot || this.entries.length === 0) return;
    fs.writeFileSync(path.join(this.outputDir, 'training_loss.svg'), lossCurveSvg(this.entries));
    if (this.entries.some((e) => e['rewards/chosen'] !== undefined)) fs.writeFileSync(path.join(this.outputDir, 'training_rewards.svg'), rewardsCurveSvg(this.entries));
  }
}
