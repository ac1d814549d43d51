// Every dispatch a training step records says what it costs (FLOPs and least bytes moved), so the bench's
// flops_per_step and bytes_per_step cover the whole step. Counted on the dry-run Gpu: no GPU needed.
import { describe, expect, test } from 'vitest';
import { CountingGpu } from '../src/gpu/dry-run.js';
import type { Program } from '../src/gpu/program.js';
import { PROJECTIONS } from '../src/model/family.js';
import { SequenceLogprobHead } from '../src/model/heads.js';
import { Qwen3Graph } from '../src/model/qwen3.js';
import { allocateModelWeights } from '../src/model/weights.js';
import { initLora } from '../src/train/lora.js';
import { planTrainingStep } from '../src/train/memory-plan.js';
import { TINY_CONFIG } from './tiny-model.js';

function uncosted(programs: Program[]): string[] {
  const labels = programs.flatMap((p) => p.steps).filter((s) => 'pipeline' in s && !s.cost);
  return [...new Set(labels.map((s) => s.label.replace(/^L\d+\./, '').replace(/\[\d+\]$/, '')))];
}

function costed(programs: Program[]): number {
  return programs.flatMap((p) => p.steps).filter((s) => 'pipeline' in s && s.cost && s.cost.bytes > 0).length;
}

describe('kernel costs', () => {
  const base = { B: 2, T: 24, rank: 4, targets: [...PROJECTIONS], weightDtype: 'bf16' as const };
  for (const [name, c, o] of [
    ['recompute, LoRA dropout', TINY_CONFIG, { recompute: true, dropout: 0.1 }],
    ['activations kept, qwen2 biases', { ...TINY_CONFIG, modelType: 'qwen2' as const }, { recompute: false }],
    ['dpo, reference pass', TINY_CONFIG, { recompute: true, preference: 'sigmoid' as const }],
    ['kto', TINY_CONFIG, { recompute: true, preference: 'kto' as const }],
  ] as const) {
    test(`every dispatch of a training step reports FLOPs and bytes (${name})`, () => {
      const { stepPrograms } = planTrainingStep(c, { ...base, ...o });
      expect(uncosted(stepPrograms)).toEqual([]);
      expect(costed(stepPrograms)).toBeGreaterThan(50);
    });
  }

  test('and those of the preference head and of an evaluation pass', () => {
    const gpu = new CountingGpu({ maxBindingBytes: 128 << 20 });
    const weights = allocateModelWeights(gpu, TINY_CONFIG, () => 'f32');
    const lora = initLora(gpu, TINY_CONFIG, { rank: 4, alpha: 4, rslora: false, dropout: 0, targets: [...PROJECTIONS] }, 0);
    const head = new SequenceLogprobHead(gpu, weights.lmHead, 2 * 16, 2);
    const pref = new Qwen3Graph(gpu, TINY_CONFIG, weights, { B: 2, T: 16, mode: 'train', lora, recompute: true, head });
    const evaluation = new Qwen3Graph(gpu, TINY_CONFIG, weights, { B: 2, T: 16, mode: 'loss', lora });
    const programs = [pref, evaluation].flatMap((g) => [g.forward, g.backward, g.zeroGrads]);
    expect(uncosted(programs)).toEqual([]);
    expect(costed(programs)).toBeGreaterThan(50);
  });
});
