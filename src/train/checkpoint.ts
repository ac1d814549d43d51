// checkpoint-N folders: the adapter (PEFT layout), the AdamW moments and the trainer state. Each is written
// into a temporary folder and renamed into place, so a checkpoint-N that exists is complete; a kill at any
// moment leaves at most a stale temporary folder, which is never taken for a checkpoint.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Gpu } from '../gpu/device.js';
import type { AdamWState } from '../kernels/adamw.js';
import { Checkpoint, writeSafetensors } from '../model/safetensors.js';
import { fileError } from '../errors.js';
import { savePeftAdapter, type LoraWeights } from './lora.js';
import type { LogEntry } from './logger.js';
import { readJsonFile } from '../json-file.js';

export interface TrainerState {
  global_step: number;
  log_history: LogEntry[];
}

const OPTIMIZER_FILE = 'optimizer.safetensors';
const STATE_FILE = 'trainer_state.json';

export async function saveCheckpoint(gpu: Gpu, dir: string, lora: LoraWeights, optimizer: AdamWState, state: TrainerState, baseModel: string | null): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  await savePeftAdapter(gpu, lora, tmp, baseModel);
  writeSafetensors(path.join(tmp, OPTIMIZER_FILE), [
    ...optimizer.m.map((m, i) => ({ name: `m.${i}`, dtype: 'F32' as const, shape: [m.length], data: m })),
    ...optimizer.v.map((v, i) => ({ name: `v.${i}`, dtype: 'F32' as const, shape: [v.length], data: v })),
  ], { step: String(optimizer.step), skipped_steps: String(optimizer.skippedSteps ?? 0), consecutive_bad: String(optimizer.consecutiveBad ?? 0) });
  fs.writeFileSync(path.join(tmp, STATE_FILE), JSON.stringify(state, null, 2) + '\n');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
}

/** The complete checkpoint-N with the largest N in `outputDir`, if any. */
export function latestCheckpoint(outputDir: string): string | undefined {
  if (!fs.existsSync(outputDir)) return undefined;
  const steps = fs.readdirSync(outputDir)
    .map((e) => /^checkpoint-(\d+)$/.exec(e))
    .filter((m): m is RegExpExecArray => m !== null && fs.existsSync(path.join(outputDir, m[0], STATE_FILE)))
    .map((m) => Number(m[1]));
  return steps.length ? path.join(outputDir, `checkpoint-${Math.max(...steps)}`) : undefined;
}

export function loadCheckpoint(dir: string): { state: TrainerState; optimizer: AdamWState } {
  const stateFile = path.join(dir, STATE_FILE);
  if (!fs.existsSync(stateFile)) throw fileError(stateFile, 'missing: not a complete checkpoint');
  const parsed = readJsonFile(stateFile);
  const state = parsed as TrainerState;
  const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(parsed) || !Number.isInteger(state.global_step) || state.global_step < 0 || !Array.isArray(state.log_history) || !state.log_history.every(isObject)) {
    throw fileError(stateFile, 'global_step or log_history missing or invalid');
  }
  const ckpt = Checkpoint.open(path.join(dir, OPTIMIZER_FILE));
  try {
    const count = [...ckpt.tensors.keys()].filter((n) => n.startsWith('m.')).length;
    const read = (prefix: string) => Array.from({ length: count }, (_, i) => ckpt.readF32(`${prefix}.${i}`));
    const step = Number(ckpt.metadata.step);
    if (!Number.isInteger(step)) throw fileError(path.join(dir, OPTIMIZER_FILE), 'metadata has no step');
    const counter = (key: string) => {
      const n = Number(ckpt.metadata[key] ?? 0);
      if (!Number.isInteger(n) || n < 0) throw fileError(path.join(dir, OPTIMIZER_FILE), `metadata ${key} is not a count`);
      return n;
    };
    return { state, optimizer: { m: read('m'), v: read('v'), step, skippedSteps: counter('skipped_steps'), consecutiveBad: counter('consecutive_bad') } };
  } finally {
    ckpt.close();
  }
}
