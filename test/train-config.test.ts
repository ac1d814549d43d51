import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { SUPPORTED_KEYS, exportAfterTraining, loadExportConfig, loadTrainConfig, stepInterval } from '../src/train/config.js';
import { PROJECTIONS } from '../src/model/family.js';

const dir = mkdtempSync(join(tmpdir(), 'loraforge-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function yamlFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** The UserError message loadTrainConfig (or another reader of the same config) throws. */
function errorOf(argv: string[], load: (argv: string[]) => unknown = loadTrainConfig): string {
  try {
    load(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('expected a UserError');
}

// LLaMA-Factory's examples/train_lora/llama3_lora_sft.yaml, with a Qwen3 model and template.
const LF_EXAMPLE = `### model
model_name_or_path: Qwen/Qwen3-0.6B
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: identity,alpaca_en_demo
template: qwen3_nothink
cutoff_len: 2048
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/qwen3-0.6b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null
deepspeed: examples/deepspeed/ds_z3_config.json
flash_attn: fa2
`;

describe('loadTrainConfig', () => {
  it("reads LLaMA-Factory's example YAML with its meanings and defaults", () => {
    const { config, warnings } = loadTrainConfig([yamlFile('lf.yaml', LF_EXAMPLE)]);
    expect(config).toMatchObject({
      model_name_or_path: 'Qwen/Qwen3-0.6B',
      stage: 'sft',
      finetuning_type: 'lora',
      lora_rank: 8,
      lora_alpha: 16, // 2 x rank, as LLaMA-Factory
      lora_dropout: 0,
      lora_target: [...PROJECTIONS],
      dataset: 'identity,alpaca_en_demo',
      dataset_dir: 'data',
      template: 'qwen3_nothink',
      cutoff_len: 2048,
      max_samples: 1000,
      val_size: 0,
      output_dir: 'saves/qwen3-0.6b/lora/sft',
      learning_rate: 1e-4,
      num_train_epochs: 3,
      max_steps: -1,
      lr_scheduler_type: 'cosine',
      warmup_ratio: 0.1,
      bf16: true,
      seed: 42,
      max_grad_norm: 1,
      resume_from_checkpoint: undefined,
      train_on_prompt: false,
      packing: false,
      enable_thinking: true,
    });
    expect(warnings).toContain('LLaMA-Factory keys ignored here: deepspeed, flash_attn');
    expect(warnings).toContain('keys with no effect here: trust_remote_code, overwrite_cache, preprocessing_num_workers, dataloader_num_workers, ddp_timeout');
    expect(warnings).toHaveLength(2);
  });

  it('command-line overrides win and are coerced: --key value, --key=value, --flag, key=value', () => {
    const path = yamlFile('base.yaml', 'model_name_or_path: m\ndataset: d\nlearning_rate: 1e-4\n');
    const { config } = loadTrainConfig([path, '--learning_rate', '3e-5', '--lora-rank=16', '--packing', 'template=qwen3', '--use_rslora', 'false', '--output_dir', '123']);
    expect(config.learning_rate).toBe(3e-5);
    expect(config.lora_rank).toBe(16);
    expect(config.lora_alpha).toBe(32); // the default follows the overridden rank
    expect(config.packing).toBe(true);
    expect(config.template).toBe('qwen3');
    expect(config.use_rslora).toBe(false);
    expect(config.output_dir).toBe('123');
  });

  it('works without a YAML file; a missing template defaults to qwen3 with a warning', () => {
    const { config, warnings } = loadTrainConfig(['--model_name_or_path', 'm', '--dataset', 'a.json']);
    expect(config.template).toBe('qwen3');
    expect(warnings.some((w) => w.includes("template not set: using 'qwen3'"))).toBe(true);
  });

  it('lora_target lists, neat_packing implies packing, quoted numbers and YAML lists are accepted', () => {
    const path = yamlFile('t.yaml', 'model_name_or_path: m\ndataset: [a, b]\nlora_target: v_proj, q_proj\nneat_packing: true\nlearning_rate: "2e-4"\n');
    const { config } = loadTrainConfig([path]);
    expect(config.lora_target).toEqual(['q_proj', 'v_proj']);
    expect(config.dataset).toBe('a,b');
    expect(config.packing).toBe(true);
    expect(config.learning_rate).toBe(2e-4);
    expect(loadTrainConfig([path, '--lora_alpha', '8']).config.lora_alpha).toBe(8);
  });

  it('unknown keys are warnings naming them', () => {
    const path = yamlFile('u.yaml', 'model_name_or_path: m\ndataset: d\nlearnign_rate: 1\n');
    const { warnings } = loadTrainConfig([path, '--colour', 'blue']);
    expect(warnings).toContain(`${path}: unknown key 'learnign_rate' ignored`);
    expect(warnings).toContain("command line: unknown key 'colour' ignored");
  });

  it('wrong values are UserErrors naming the file and the key', () => {
    const path = yamlFile('cfg.yaml', 'model_name_or_path: m\ndataset: d\nlearning_rate: abc\n');
    expect(errorOf([path])).toBe(`${path}: learning_rate must be a positive number, got 'abc'`);
    const ok = yamlFile('ok.yaml', 'model_name_or_path: m\ndataset: d\n');
    expect(errorOf([ok, '--lora_rank', '2.5'])).toBe("command line: lora_rank must be a positive integer, got '2.5'");
    expect(errorOf([ok, '--bf16', 'yes'])).toBe("command line: bf16 must be true or false, got 'yes'");
    expect(errorOf([ok, '--template', 'llama3'])).toBe("command line: template must be one of qwen3, qwen3_nothink, got 'llama3'");
    expect(errorOf([ok, '--finetuning_type', 'full'])).toMatch(/finetuning_type must be one of lora/);
    expect(errorOf([ok, '--stage', 'rm'])).toBe("command line: stage must be one of sft, pt, dpo, kto, got 'rm'");
    expect(errorOf([ok, '--stage', 'kto', '--packing', 'true'])).toBe('command line: packing cannot be set with stage kto (each example is two unpacked rows)');
    expect(errorOf([ok, '--pref_loss', 'exo_pair'])).toBe("command line: pref_loss must be one of sigmoid, hinge, ipo, orpo, simpo, got 'exo_pair'");
    expect(errorOf([ok, '--pref_beta', '0'])).toMatch(/^command line: pref_beta must be /);
    expect(errorOf([ok, '--pref_ftx', '-1'])).toMatch(/^command line: pref_ftx must be /);
    expect(errorOf([ok, '--kto_rejected_weight', 'x'])).toMatch(/^command line: kto_rejected_weight must be /);
    expect(errorOf([ok, '--lora_target', 'q_proj,wq'])).toMatch(/lora_target must be 'all' or a comma list of q_proj, .* \(unknown: wq\)/);
    expect(errorOf([ok, '--val_size', '1'])).toMatch(/val_size must be a fraction in \[0, 1\) or a sample count > 1/);
    expect(errorOf([ok, '--max_steps', '0'])).toMatch(/max_steps must be -1/);
    expect(errorOf([ok, '--lr_scheduler_type', 'polynomial'])).toMatch(/lr_scheduler_type must be one of linear, cosine/);
    expect(errorOf([ok, '--use_dora', 'true'])).toBe('command line: use_dora: DoRA is not supported');
    expect(errorOf([ok, '--quantization_bit', '2'])).toMatch(/quantization_bit must be 4 or 8/);
    expect(loadTrainConfig([ok, '--quantization_bit', '4']).config.quantization_bit).toBe(4);
    expect(loadTrainConfig([ok]).config.quantization_bit).toBeUndefined();
    expect(errorOf([ok, '--mix_strategy', 'interleave_under'])).toMatch(/mix_strategy 'concat'/);
    expect(loadTrainConfig([ok, '--mix_strategy', 'concat', '--mask_history', 'false']).config.model_name_or_path).toBe('m');
  });

  it('missing keys, bad files, bad YAML and conflicting keys are UserErrors', () => {
    expect(errorOf([yamlFile('nomodel.yaml', 'dataset: d\n')])).toMatch(/nomodel\.yaml: model_name_or_path is required/);
    expect(errorOf([join(dir, 'absent.yaml')])).toMatch(/absent\.yaml: cannot read the config file \(ENOENT\)/);
    expect(errorOf([yamlFile('bad.yaml', 'model_name_or_path: [unclosed\n')])).toMatch(/bad\.yaml: invalid YAML/);
    expect(errorOf([yamlFile('list.yaml', '- a\n- b\n')])).toMatch(/list\.yaml: expected a mapping/);
    const ok = yamlFile('ok2.yaml', 'model_name_or_path: m\ndataset: d\n');
    expect(errorOf([ok, '--val_size', '0.1', '--eval_dataset', 'e'])).toMatch(/val_size and eval_dataset cannot both be set/);
    expect(errorOf([ok, '--eval_strategy', 'steps'])).toMatch(/eval_strategy 'steps' needs val_size or eval_dataset/);
    expect(errorOf([ok, 'other.yaml'])).toMatch(/unexpected argument 'other\.yaml'/);
  });

  it('every key is described for the README', () => {
    for (const [key, text] of Object.entries(SUPPORTED_KEYS)) {
      expect(text.length, key).toBeGreaterThan(5);
    }
    expect(Object.keys(SUPPORTED_KEYS)).toContain('neat_packing');
    expect(Object.keys(SUPPORTED_KEYS)).toEqual(expect.arrayContaining(['pref_beta', 'pref_ftx', 'pref_loss', 'simpo_gamma', 'kto_chosen_weight', 'kto_rejected_weight']));
  });

  it("reads the preference keys with LLaMA-Factory's defaults", () => {
    const ok = yamlFile('pref.yaml', 'model_name_or_path: m\ndataset: d\npref_loss: simpo\npref_beta: 2.5\nsimpo_gamma: 0.3\n');
    const { config } = loadTrainConfig([ok]);
    expect([config.pref_loss, config.pref_beta, config.simpo_gamma, config.pref_ftx, config.kto_chosen_weight, config.kto_rejected_weight]).toEqual(['simpo', 2.5, 0.3, 0, 1, 1]);
    const defaults = loadTrainConfig([yamlFile('plain.yaml', 'model_name_or_path: m\ndataset: d\n')]).config;
    expect([defaults.pref_loss, defaults.pref_beta, defaults.simpo_gamma]).toEqual(['sigmoid', 0.1, 0.5]);
  });
});

describe('export config (the same keys, specs and defaults as training)', () => {
  const exportErrorOf = (argv: string[]) => errorOf(argv, loadExportConfig);

  it("reads LLaMA-Factory's merge YAML: its export keys, defaults for the rest, training keys accepted silently", () => {
    const file = yamlFile('merge.yaml', [
      'model_name_or_path: Qwen/Qwen3-0.6B', 'adapter_name_or_path: saves/lora', 'template: qwen3', 'finetuning_type: lora',
      'trust_remote_code: true', 'export_dir: out', 'export_quantization: Q4_K_M', 'export_legacy_format: false', 'lora_rank: 99',
    ].join('\n'));
    const { config, warnings } = loadExportConfig([file, '--export_size', '2']);
    expect(config).toEqual({
      model_name_or_path: 'Qwen/Qwen3-0.6B', adapter_name_or_path: 'saves/lora', export_dir: 'out', export_format: 'gguf',
      export_quantization: 'q4_k_m', export_size: 2,
    });
    expect(warnings).toEqual(['LLaMA-Factory keys ignored here: export_legacy_format']);
  });

  it('a bad training key does not stop an export, a bad export key stops training before it starts', () => {
    expect(loadExportConfig(['--model_name_or_path', 'm', '--export_dir', 'o', '--lora_rank', 'many']).config.export_dir).toBe('o');
    expect(errorOf(['--model_name_or_path', 'm', '--dataset', 'd', '--export_quantization', 'q3_z']))
      .toBe(`command line: export_quantization must be one of f32, f16, bf16, q8_0, q4_0, q6_k, q5_k_m, q4_k_m, got 'q3_z'`);
  });

  it('wrong and missing values are UserErrors naming the file and the key', () => {
    const file = yamlFile('export-bad.yaml', 'model_name_or_path: m\nexport_dir: o\nexport_format: onnx\n');
    expect(exportErrorOf([file])).toBe(`${file}: export_format must be one of gguf, gguf-lora, safetensors, got 'onnx'`);
    expect(exportErrorOf(['--model_name_or_path', 'm'])).toBe('command line: export_dir is required');
    expect(exportErrorOf(['--model_name_or_path', 'm', '--export_dir', 'o', '--export_size', '0'])).toMatch(/export_size must be a positive number/);
    expect(exportErrorOf(['--model_name_or_path', 'm', '--export_dir', 'o', '--export_format', 'gguf-lora'])).toBe('command line: export_format gguf-lora needs adapter_name_or_path');
  });

  it('a training config exports its own adapter when export_dir is set', () => {
    const base = ['--model_name_or_path', 'm', '--dataset', 'd', '--output_dir', 'runs/a'];
    expect(exportAfterTraining(loadTrainConfig(base).config)).toBeUndefined();
    expect(exportAfterTraining(loadTrainConfig([...base, '--export_dir', 'x', '--export_format', 'safetensors']).config)).toEqual({
      model_name_or_path: 'm', adapter_name_or_path: 'runs/a', export_dir: 'x', export_format: 'safetensors', export_quantization: 'q8_0', export_size: 5,
    });
  });
});

describe('stepInterval', () => {
  it('reads values below 1 as a fraction of the total steps, rounded up', () => {
    expect(stepInterval(10, 1000)).toBe(10);
    expect(stepInterval(0.1, 95)).toBe(10);
    expect(stepInterval(0.001, 10)).toBe(1);
  });
});
