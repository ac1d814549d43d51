// The loss and rewards charts (hand-written SVG) and the progress line's rewards text.
import { describe, expect, it } from 'vitest';
import { lossCurveSvg, rewardsCurveSvg } from '../src/train/plot.js';
import { rewardsText } from '../src/train/progress-bar.js';
import type { LogEntry } from '../src/train/loop.js';

const entry = (step: number, extra: Partial<LogEntry> = {}): LogEntry => ({
  current_steps: step, total_steps: 4, loss: 1 / step, lr: 1e-3, grad_norm: 1, epoch: step / 4, skipped_steps: 0, tokens_per_second: 100, ...extra,
} as LogEntry);

const polylines = (svg: string) => [...svg.matchAll(/points="([^"]*)"/g)].map((m) => m[1]!.split(' ').length);

describe('charts', () => {
  it('loss: the train line, and the eval line where eval_loss was logged; NaN points left out', () => {
    const svg = lossCurveSvg([entry(1), entry(2, { eval_loss: 0.9 }), entry(3, { loss: NaN }), entry(4, { eval_loss: 0.7 })]);
    expect(polylines(svg)).toEqual([3, 2]);
    expect(svg).toContain('— eval');
  });

  it('rewards: chosen, rejected and margin lines with a legend', () => {
    const svg = rewardsCurveSvg([1, 2, 3].map((s) => ({ current_steps: s, 'rewards/chosen': 0.1 * s, 'rewards/rejected': -0.1 * s, 'rewards/margins': 0.2 * s })));
    expect(polylines(svg)).toEqual([3, 3, 3]);
    for (const label of ['chosen', 'rejected', 'margin']) expect(svg).toContain(`— ${label}`);
    expect(svg).toContain('>rewards</text>');
  });
});

describe('progress line', () => {
  it('shows rewards, margin and (dpo) accuracy; nothing for SFT', () => {
    expect(rewardsText(entry(1))).toBe('');
    const dpo = entry(1, { 'rewards/chosen': 0.25, 'rewards/rejected': -0.125, 'rewards/accuracies': 0.75 } as Partial<LogEntry>);
    expect(rewardsText(dpo)).toBe(' | rewards 0.250/-0.125 margin 0.375 acc 0.75');
    const kto = entry(1, { 'rewards/chosen': 0.5, 'rewards/rejected': 0.25 } as Partial<LogEntry>);
    expect(rewardsText(kto)).toBe(' | rewards 0.500/0.250 margin 0.250');
  });
});
