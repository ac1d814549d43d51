// LLaMA-Factory's own examples and demo datasets through the CLI on the tiny random model: stage pt with its
// qwen3_lora_pretrain.yaml (examples/qwen3-lora-pretrain.yaml, pointed at the model) on c4_demo, with a checkpoint,
// a resume and a GGUF export; SFT on its glaive_toolcall_en_demo (tool calls); and its qwen3_lora_dpo.yaml and
// qwen3_lora_kto.yaml (examples/) on dpo_en_demo and kto_en_demo. All read its dataset_info.json.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCli, runCli, tinyTrainYaml, writeTinyModel } from './tiny-model.js';
import type { LogEntry } from '../src/train/logger.js';

const LLAMA_FACTORY_DATA = resolve('test/data/llamafactory');
const PRETRAIN_YAML = resolve('examples/qwen3-lora-pretrain.yaml');

let root: string;
let entry: string;
let model: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-stage-cli-'));
  entry = buildCli('stage-cli');
  model = writeTinyModel(join(root, 'model'));
}, 180_000);

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The entries of an output folder's trainer_log.jsonl. */
function logEntries(outputDir: string): LogEntry[] {
  return readFileSync(join(outputDir, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as LogEntry);
}

/** Losses by step from an output folder's trainer_log.jsonl. */
function losses(outputDir: string): Map<number, number> {
  return new Map(logEntries(outputDir).filter((l) => l.loss !== undefined).map((l) => [l.current_steps, l.loss!]));
}

describe('stage pt', () => {
  // The example's sizes are a 4B model's: the tiny model gets short blocks and a few steps.
  const small = ['--model_name_or_path', '', '--dataset_dir', LLAMA_FACTORY_DATA, '--cutoff_len', '32', '--gradient_accumulation_steps', '1', '--logging_steps', '1'];
  const args = (out: string, ...more: string[]) => ['train', PRETRAIN_YAML, ...small.map((a) => (a === '' ? model : a)), '--output_dir', out, ...more];

  it("LLaMA-Factory's qwen3_lora_pretrain.yaml trains on c4_demo, saves, resumes to the same loss and exports", async () => {
    const full = join(root, 'pt-full');
    const exportDir = join(root, 'pt-export');
    const r = await runCli(entry, args(full, '--max_steps', '3', '--save_steps', '1', '--export_dir', exportDir, '--export_format', 'gguf', '--export_quantization', 'q8_0'), root, 180_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/done: 3 steps/);
    expect(r.stderr).toMatch(/keys with no effect here: trust_remote_code, preprocessing_num_workers, dataloader_num_workers, ddp_timeout/);
    const fullLoss = losses(full);
    expect([...fullLoss.keys()]).toEqual([1, 2, 3]);
    // Random weights over 512 ids: the loss starts near ln(512).
    expect(fullLoss.get(1)!).toBeGreaterThan(4);
    for (const f of ['adapter_model.safetensors', 'training_loss.svg', 'checkpoint-2/adapter_model.safetensors']) expect(existsSync(join(full, f)), f).toBe(true);
    expect(readdirSync(exportDir).some((f) => f.endsWith('.gguf'))).toBe(true);

    const resumed = join(root, 'pt-resumed');
    // Stopped after step 2 (the schedule still that of 3 steps), then resumed from its checkpoint.
    const first = await runCli(entry, args(resumed, '--max_steps', '3', '--save_steps', '2'), root, 180_000);
    expect(first.code, first.stderr).toBe(0);
    rmSync(join(resumed, 'checkpoint-3'), { recursive: true, force: true });
    rmSync(join(resumed, 'trainer_log.jsonl'));
    const again = await runCli(entry, args(resumed, '--max_steps', '3', '--resume_from_checkpoint', join(resumed, 'checkpoint-2')), root, 180_000);
    expect(again.code, again.stderr).toBe(0);
    expect(losses(resumed).get(3)).toBeCloseTo(fullLoss.get(3)!, 5);
  }, 400_000);
});

describe('tool calls', () => {
  it("SFT trains on LLaMA-Factory's glaive_toolcall_en_demo through its dataset_info.json", async () => {
    const out = join(root, 'tools');
    const yaml = join(root, 'tools.yaml');
    writeFileSync(yaml, tinyTrainYaml(model, 'glaive_toolcall_en_demo', out, { dataset_dir: LLAMA_FACTORY_DATA, template: 'qwen3', cutoff_len: 128, max_steps: 2 }));
    const r = await runCli(entry, ['train', yaml], root, 180_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/done: 2 steps/);
    const loss = losses(out);
    expect([...loss.keys()]).toEqual([1, 2]);
    for (const l of loss.values()) expect(l).toBeGreaterThan(1);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
  }, 200_000);
});

describe('preference stages on LLaMA-Factory demo data', () => {
  // The examples name dpo_en_demo / kto_en_demo, found through dataset_info.json in --dataset_dir; the tiny model
  // gets short sequences and two steps.
  it.each([['dpo', 'dpo_en_demo'], ['kto', 'kto_en_demo']])("LLaMA-Factory's qwen3_lora_%s.yaml trains on its %s", async (stage) => {
    const out = join(root, `pref-${stage}`);
    const r = await runCli(entry, [
      'train', resolve(`examples/qwen3-lora-${stage}.yaml`), '--model_name_or_path', model, '--dataset_dir', LLAMA_FACTORY_DATA,
      '--cutoff_len', '48', '--max_steps', '2', '--gradient_accumulation_steps', '2', '--logging_steps', '1', '--bf16', 'false', '--output_dir', out,
    ], root, 180_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/done: 2 steps/);
    const log = logEntries(out).filter((e) => e.loss !== undefined);
    expect(log.map((e) => e.current_steps)).toEqual([1, 2]);
    for (const e of log) {
      expect(Number.isFinite(e.loss), 'loss').toBe(true);
      for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/margins'] as const) expect(Number.isFinite(e[k]), k).toBe(true);
      // Answer tokens were scored: a sequence log-probability under random weights is well below zero.
      expect(e['logps/chosen']).toBeLessThan(-1);
      if (stage === 'dpo') expect(Number.isFinite(e['rewards/accuracies']), 'rewards/accuracies').toBe(true);
      else expect(Number.isFinite(e.kl), 'kl').toBe(true);
    }
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
  }, 200_000);
});
