// Issue 5's acceptance tests through the real export path (`runExport`, the CLI, the end of a training run):
// the fixture's adapter is merged on the GPU, the files are written, and independent readers check them —
// llama.cpp (node-llama-cpp, in a child process) and @huggingface/gguf for GGUF, our own engine without
// an adapter for the merged safetensors folder — against PEFT's logits with the adapter (`lora_logits`).
import { gguf } from '@huggingface/gguf';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runExport, type ExportOptions } from '../src/gguf/export-job.js';
import { GgmlType } from '../src/gpu/ggml-types.js';
import type { GgufPreset } from '../src/gguf/presets.js';
import { sizeLabelOf } from '../src/gguf/model-name.js';
import { modelParameterCount } from '../src/model/families.js';
import { jinjaChatTemplate, ollamaChatTemplate } from '../src/train/serving-template.js';
import { loadModelConfig } from '../src/model/config.js';
import { plainBatch, Qwen3Graph, shiftLabels } from '../src/model/qwen3.js';
import { Checkpoint } from '../src/model/safetensors.js';
import { loadModelWeights, releaseModelWeights } from '../src/model/weights.js';
import { FIXTURES, argmax, llamaProbabilities, logSoftmax, tempDir } from './gguf-oracles.js';
import { testGpu, maxAbsDiff } from './helpers.js';
import { buildCli, runCli, tinyTrainYaml, writeTinyDataset } from './tiny-model.js';

const root = tempDir();
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The reference case: token rows and PEFT's logits with the adapter. */
function referenceCase(fixture: string) {
  const c = Checkpoint.open(join(FIXTURES, fixture, 'case.safetensors'));
  const [B, T, V] = c.info('lora_logits').shape as [number, number, number];
  const ids = c.readF32('input_ids');
  const ref = {
    B, T, V, ids,
    labels: c.readF32('labels'),
    loraLogits: c.readF32('lora_logits'),
    baseLogits: c.readF32('base_logits'),
    rows: Array.from({ length: B }, (_, b) => Array.from(ids.subarray(b * T, (b + 1) * T))),
  };
  c.close();
  return ref;
}

/** max |Δ log-prob| between llama.cpp's distributions and log_softmax(logits), and the worst argmax gap. */
function compareLogProbs(probs: number[][][], logits: Float32Array, B: number, T: number, V: number): { maxDiff: number; worstArgmaxGap: number } {
  let maxDiff = 0;
  let worstArgmaxGap = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const ref = logSoftmax(logits, (b * T + t) * V, V);
      const got = probs[b]![t]!;
      for (let v = 0; v < V; v++) maxDiff = Math.max(maxDiff, Math.abs(Math.log(got[v]!) - ref[v]!));
      // How much less likely (in the reference) llama.cpp's top token is than the reference's: 0 when they agree.
      worstArgmaxGap = Math.max(worstArgmaxGap, ref[argmax(ref)]! - ref[argmax(got)]!);
    }
  }
  return { maxDiff, worstArgmaxGap };
}

/** max |Δ log p| between two llama.cpp runs over the same rows. */
function maxLogProbDiff(a: number[][][], b: number[][][]): number {
  let m = 0;
  a.forEach((row, i) => row.forEach((p, t) => p.forEach((v, k) => { m = Math.max(m, Math.abs(Math.log(v) - Math.log(b[i]![t]![k]!))); })));
  return m;
}

function options(fixture: string, exportDir: string, o: Partial<ExportOptions>): ExportOptions {
  return {
    model_name_or_path: join(FIXTURES, fixture, 'model'),
    adapter_name_or_path: join(FIXTURES, fixture, 'adapter'),
    export_dir: exportDir,
    export_format: 'gguf',
    export_quantization: 'f32',
    export_size: 5,
    ...o,
  };
}

/** The GGUF's tensor types (by name) and metadata, as @huggingface/gguf reads them. */
async function parseGguf(path: string) {
  const parsed = await gguf(path, { allowLocalFile: true });
  return { metadata: parsed.metadata as Record<string, unknown>, types: new Map(parsed.tensorInfos.map((t) => [t.name, Number(t.dtype)])) };
}

/** Export a merged GGUF with runExport; checks the returned files, the parse and the Modelfile beside it. */
async function exportMergedGguf(fixture: string, quantization: GgufPreset): Promise<{ file: string; types: Map<string, number> }> {
  const files = await runExport(options(fixture, join(root, fixture, `gguf-${quantization}`), { export_quantization: quantization }));
  expect(files).toHaveLength(2);
  const [file, modelfile] = files as [string, string];
  // The converter's naming of a folder called "model": no basename, the size label from the parameter count.
  const config = loadModelConfig(join(FIXTURES, fixture, 'model'));
  const stem = `Model-${sizeLabelOf(modelParameterCount(config))}-${quantization.toUpperCase()}`;
  expect(basename(file)).toBe(`${stem}.gguf`);
  expect(modelfile).toBe(join(dirname(file), `${stem}.Modelfile`));
  expect(readFileSync(modelfile, 'utf8').split('\n')[0]).toBe(`FROM ./${basename(file)}`);
  const { metadata, types } = await parseGguf(file);
  expect(metadata['general.architecture']).toBe('qwen3');
  expect(metadata['qwen3.block_count']).toBe(config.numLayers);
  // Per layer: 7 projections, 4 norms (attn, ffn, q, k); plus embeddings, final norm and an untied output.
  expect(types.size).toBe(config.numLayers * 11 + 2 + (config.tieWordEmbeddings ? 0 : 1));
  return { file, types };
}

// Measured max |Δ log p| against lora_logits: q8_0 0.014 (tiny-tied) / 0.022 (small-untied), q4_k_m 0.068 / 0.137.
// q4_k_m's projections here are mostly Q5_0 (rows of 64/96/160 are not whole 256-blocks, so llama.cpp's fallback
// applies) with some Q4_K/Q6_K: about 3 bits fewer than q8_0, so ~8x its error, as measured. 0.3 leaves ~2x
// headroom and stays below what the adapter itself changes (0.58 / 1.12 nats), so an export that lost the merge,
// or a wrong block layout or scale (errors of nats), fails it.
const Q4_K_M_BOUND = 0.3;

for (const fixture of ['tiny-tied', 'small-untied']) {
  describe(`${fixture}: runExport with the fixture adapter merged on the GPU`, () => {
    const ref = referenceCase(fixture);
    let mergedF32Probs: number[][][] | undefined;

    it('gguf f32: llama.cpp reproduces PEFT with the adapter (max |Δ log p| ≤ 2e-3, same argmax)', async () => {
      const { file, types } = await exportMergedGguf(fixture, 'f32');
      expect(new Set(types.values())).toEqual(new Set([GgmlType.F32]));
      mergedF32Probs = await llamaProbabilities({ model: file, vocab: ref.V, rows: ref.rows });
      const { maxDiff, worstArgmaxGap } = compareLogProbs(mergedF32Probs, ref.loraLogits, ref.B, ref.T, ref.V);
      const adapterEffect = compareLogProbs(mergedF32Probs, ref.baseLogits, ref.B, ref.T, ref.V).maxDiff;
      console.log(`${fixture} f32: max |Δ log p| ${maxDiff.toExponential(2)}, adapter effect ${adapterEffect.toFixed(3)}`);
      expect(maxDiff).toBeLessThan(2e-3);
      // Same prediction everywhere, unless the reference itself has a near-tie within the tolerance.
      expect(worstArgmaxGap).toBeLessThan(2e-3);
      // The merge changed the model far beyond the tolerance: the check cannot pass with an unmerged base.
      expect(adapterEffect).toBeGreaterThan(20 * maxDiff);
    });

    it('gguf q8_0: loads in llama.cpp, max |Δ log p| ≤ 5e-2', async () => {
      const { file, types } = await exportMergedGguf(fixture, 'q8_0');
      expect(types.get('blk.0.attn_q.weight')).toBe(GgmlType.Q8_0);
      const probs = await llamaProbabilities({ model: file, vocab: ref.V, rows: ref.rows });
      const { maxDiff } = compareLogProbs(probs, ref.loraLogits, ref.B, ref.T, ref.V);
      console.log(`${fixture} q8_0: max |Δ log p| ${maxDiff.toExponential(2)}`);
      expect(maxDiff).toBeLessThan(5e-2);
    });

    it(`gguf q4_k_m: loads in llama.cpp, max |Δ log p| ≤ ${Q4_K_M_BOUND}`, async () => {
      const { file, types } = await exportMergedGguf(fixture, 'q4_k_m');
      if (fixture === 'small-untied') {
        // Its ffn_down rows (256 long) are whole K-blocks: llama.cpp decodes our Q4_K and Q6_K here.
        expect(types.get('blk.0.ffn_down.weight')).toBe(GgmlType.Q4_K);
        expect(types.get('blk.2.ffn_down.weight')).toBe(GgmlType.Q6_K);
      }
      const probs = await llamaProbabilities({ model: file, vocab: ref.V, rows: ref.rows });
      const { maxDiff } = compareLogProbs(probs, ref.loraLogits, ref.B, ref.T, ref.V);
      console.log(`${fixture} q4_k_m: max |Δ log p| ${maxDiff.toExponential(2)}`);
      expect(maxDiff).toBeLessThan(Q4_K_M_BOUND);
    });

    it('gguf-lora: the adapter GGUF on the f32 base export gives the merged export\'s probabilities', async () => {
      expect(mergedF32Probs, 'needs the f32 test above').toBeDefined();
      const [adapter] = await runExport(options(fixture, join(root, fixture, 'lora'), { export_format: 'gguf-lora' }));
      expect(basename(adapter!)).toBe('adapter.gguf');
      const { metadata } = await parseGguf(adapter!);
      expect(metadata['general.type']).toBe('adapter');
      const [base] = await runExport(options(fixture, join(root, fixture, 'base'), { adapter_name_or_path: undefined }));
      const probs = await llamaProbabilities({ model: base!, vocab: ref.V, rows: ref.rows, lora: { path: adapter!, scale: 1 } });
      const diff = maxLogProbDiff(probs, mergedF32Probs!);
      console.log(`${fixture} gguf-lora vs merged: max |Δ log p| ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(2e-3);
    });

    it('safetensors: the sharded merged folder runs in our engine without an adapter and gives lora_logits (≤ 1e-4)', async () => {
      const outDir = join(root, fixture, 'safetensors');
      // 100 kB shards: every fixture needs several.
      const files = await runExport(options(fixture, outDir, { export_format: 'safetensors', export_size: 1e-4 }));
      const shards = readdirSync(outDir).filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
      expect(shards.length).toBeGreaterThanOrEqual(2);
      for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors.index.json']) {
        expect(files).toContain(join(outDir, f));
        expect(existsSync(join(outDir, f))).toBe(true);
      }
      expect(existsSync(join(outDir, 'model.safetensors'))).toBe(false);

      const gpu = await testGpu();
      const config = loadModelConfig(outDir);
      const ckpt = Checkpoint.open(outDir);
      const weights = loadModelWeights(gpu, ckpt, config, 'f32');
      ckpt.close();
      try {
        const graph = new Qwen3Graph(gpu, config, weights, { B: ref.B, T: ref.T, mode: 'logits' });
        graph.setBatch(plainBatch(ref.ids, ref.B, ref.T, shiftLabels(ref.labels, ref.B, ref.T)));
        graph.program.run();
        const logits = await gpu.readF32(graph.logits!, ref.B * ref.T * ref.V);
        graph.destroy();
        const diff = maxAbsDiff(logits, ref.loraLogits);
        console.log(`${fixture} merged safetensors in our engine: max |Δ logit| ${diff.toExponential(2)}`);
        expect(diff).toBeLessThan(1e-4);
        // Not the base model: the adapter is in the weights.
        expect(maxAbsDiff(logits, ref.baseLogits)).toBeGreaterThan(100 * diff);
      } finally {
        releaseModelWeights(gpu, weights);
        gpu.destroy();
      }
    });
  });
}

/** The file stem the converter's naming gives the tiny-tied fixture's folder "model" (no basename; size from the count). */
const tinyStem = (quantization: string) => `Model-${sizeLabelOf(modelParameterCount(loadModelConfig(join(FIXTURES, 'tiny-tied', 'model'))))}-${quantization.toUpperCase()}`;

describe('a model fetched from the hub', () => {
  it('exports as <repo name>-<QUANT>.gguf with general.name, basename and size_label from the repo id', async () => {
    // The fixture laid out as huggingface_hub caches a download of "loraforge/Tiny-Qwen3-Chat", used offline.
    const cache = join(root, 'hub');
    const commit = 'c1899de289a04d12100db370d81485cdf75e47ca';
    const repo = join(cache, 'models--loraforge--Tiny-Qwen3-Chat');
    mkdirSync(join(repo, 'snapshots', commit), { recursive: true });
    mkdirSync(join(repo, 'refs'), { recursive: true });
    writeFileSync(join(repo, 'refs', 'main'), commit);
    const model = join(FIXTURES, 'tiny-tied', 'model');
    for (const f of readdirSync(model)) copyFileSync(join(model, f), join(repo, 'snapshots', commit, f));
    const saved = { cache: process.env.HF_HUB_CACHE, offline: process.env.HF_HUB_OFFLINE };
    process.env.HF_HUB_CACHE = cache;
    process.env.HF_HUB_OFFLINE = '1';
    try {
      const out = join(root, 'hub-export');
      const [file, modelfile] = await runExport({ ...options('tiny-tied', out, { export_quantization: 'q8_0' }), model_name_or_path: 'loraforge/Tiny-Qwen3-Chat' });
      const size = sizeLabelOf(modelParameterCount(loadModelConfig(model)));
      expect(basename(file!)).toBe(`Tiny-Qwen3-${size}-Chat-Q8_0.gguf`);
      expect(basename(modelfile!)).toBe(`Tiny-Qwen3-${size}-Chat-Q8_0.Modelfile`);
      const { metadata } = await parseGguf(file!);
      expect(metadata['general.name']).toBe('Tiny Qwen3 Chat');
      expect(metadata['general.basename']).toBe('Tiny-Qwen3');
      expect(metadata['general.size_label']).toBe(size);
      expect(metadata['general.finetune']).toBe('Chat');
      expect(metadata['general.organization']).toBe('Loraforge');
      // Another quantization into the same folder keeps the first one's Modelfile.
      const [, second] = await runExport({ ...options('tiny-tied', out, { export_quantization: 'q4_0' }), model_name_or_path: 'loraforge/Tiny-Qwen3-Chat' });
      expect(basename(second!)).toBe(`Tiny-Qwen3-${size}-Chat-Q4_0.Modelfile`);
      expect(readFileSync(modelfile!, 'utf8').split('\n')[0]).toBe(`FROM ./${basename(file!)}`);
    } finally {
      for (const [k, v] of [['HF_HUB_CACHE', saved.cache], ['HF_HUB_OFFLINE', saved.offline]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe('the CLI', () => {
  let entry: string;
  /** Dawn's own notes on stderr when a device is created; not ours. */
  const DAWN_NOTE = /^Warning: (maxDynamic\w+ artificially reduced|Backend validation enabled)/;
  const ourLines = (stderr: string) => stderr.split('\n').filter((l) => l.trim() !== '' && !DAWN_NOTE.test(l));
  const yaml = (name: string, keys: Record<string, unknown>): string => {
    const file = join(root, `${name}.yaml`);
    writeFileSync(file, Object.entries(keys).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join('\n') + '\n');
    return file;
  };
  const tiny = join(FIXTURES, 'tiny-tied');

  // A private build of src/, run as bin/loraforge.js runs dist/cli.js (parallel test files must not rebuild dist/).
  beforeAll(() => {
    entry = buildCli('export');
  }, 120_000);

  it('`export <yaml>` with LLaMA-Factory\'s export keys writes the GGUF and Modelfile', async () => {
    const out = join(root, 'cli-gguf');
    const file = yaml('export', {
      model_name_or_path: join(tiny, 'model'),
      adapter_name_or_path: join(tiny, 'adapter'),
      template: 'qwen3_nothink',
      finetuning_type: 'lora',
      export_dir: out,
      export_size: 5,
      export_device: 'cpu',
      export_legacy_format: false,
      export_quantization: 'Q8_0',
    });
    const r = await runCli(entry, ['export', file], root);
    expect(r.code, r.stderr).toBe(0);
    const gguf = join(out, `${tinyStem('q8_0')}.gguf`);
    expect(r.stdout).toContain(`wrote ${gguf}`);
    expect(r.stdout).toContain(`wrote ${join(out, `${tinyStem('q8_0')}.Modelfile`)}`);
    expect((await parseGguf(gguf)).types.get('blk.0.attn_q.weight')).toBe(GgmlType.Q8_0);
  });

  for (const [name, keys, mentions] of [
    ['unknown format', { export_format: 'onnx' }, /export_format.*onnx/],
    ['bad quantization', { export_quantization: 'q3_z' }, /export_quantization.*q3_z/],
    ['missing export_dir', { export_dir: undefined }, /export_dir is required/],
  ] as const) {
    it(`${name}: one error line, exit 1`, async () => {
      const keysWithDefaults = { model_name_or_path: join(tiny, 'model'), export_dir: join(root, `cli-${name}`), ...keys };
      const file = yaml(name.replace(/ /g, '-'), Object.fromEntries(Object.entries(keysWithDefaults).filter(([, v]) => v !== undefined)));
      const r = await runCli(entry, ['export', file], root);
      const lines = ourLines(r.stderr);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^error: /);
      expect(lines[0]).toMatch(mentions);
      expect(r.code).toBe(1);
    });
  }

  it('a training YAML with export keys exports the trained model at the end', async () => {
    const data = writeTinyDataset(join(root, 'train-data'), 4);
    const out = join(root, 'train-out');
    const exportDir = join(root, 'train-export');
    const file = join(root, 'train.yaml');
    writeFileSync(file, tinyTrainYaml(join(tiny, 'model'), data, out, { export_dir: exportDir, export_format: 'gguf', export_quantization: 'q8_0', template: 'qwen3', enable_thinking: false }));
    const r = await runCli(entry, ['train', file, '--max_steps', '2'], root, 120_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/done: 2 steps/);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
    const { metadata, types } = await parseGguf(join(exportDir, `${tinyStem('q8_0')}.gguf`));
    expect(metadata['general.architecture']).toBe('qwen3');
    expect(types.get('blk.0.attn_q.weight')).toBe(GgmlType.Q8_0);
    // Served as trained: the adapter records its template, and the GGUF and the Modelfile carry it.
    const trained = { template: 'qwen3', enable_thinking: false } as const;
    expect(JSON.parse(readFileSync(join(out, 'training_template.json'), 'utf8'))).toEqual(trained);
    expect(metadata['tokenizer.chat_template']).toBe(jinjaChatTemplate(trained));
    expect(readFileSync(join(exportDir, `${tinyStem('q8_0')}.Modelfile`), 'utf8')).toContain(`TEMPLATE """${ollamaChatTemplate(trained)}"""\n`);
  }, 180_000);
});
