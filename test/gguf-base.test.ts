// GGUF files quantized by llama.cpp itself (llama_model_quantize on our f32 export) as the frozen base, kept in their
// block formats on the GPU: our forward on each equals our forward on ggml's own dequantization of the same file
// (≤ 1e-5 relative), LoRA gradients equal those on that f32 copy, and llama.cpp's log-probs on the same file agree
// within what our exports of those types show. The fixture (hidden 64: llama.cpp falls back to Q5_0/Q5_1/Q8_0
// where 256 does not divide a row) and a wide random model (hidden 256: real Q4_K/Q5_K/Q6_K blocks).
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { dequantizeRows } from '../src/gpu/dequantize.js';
import { GgmlType, ggmlTypeName, isQuantized } from '../src/gpu/ggml-types.js';
import { matrixFromF32, type GpuMatrix } from '../src/gpu/matrix.js';
import { exportGguf } from '../src/gguf/export.js';
import { presetFileType, type GgufPreset } from '../src/gguf/presets.js';
import { loadModelConfig, type ModelConfig } from '../src/model/config.js';
import { buildModel } from '../src/model/families.js';
import { readGguf, readGgufTensorBytes, type GgufFile } from '../src/model/gguf-format.js';
import { ggufModelConfig, loadGgufWeights } from '../src/model/gguf-model.js';
import { plainBatch, Qwen3Graph, shiftLabels } from '../src/model/qwen3.js';
import { fileSource } from '../src/model/safetensors.js';
import { releaseModelWeights, type ModelWeights } from '../src/model/weights.js';
import type { AdamWHyper } from '../src/kernels/adamw.js';
import { initLora, readLoraTensors, releaseLora, savePeftAdapter, writeLoraTensors, type LoraSettings, type LoraWeights } from '../src/train/lora.js';
import { runExport } from '../src/gguf/export-job.js';
import { readFileSync } from 'node:fs';
import { PROJECTIONS } from '../src/model/family.js';
import { LoraTrainer } from '../src/train/trainer.js';
import { argmax, fixtureSources, llamaProbabilities, llamaQuantize, loadGgml, logSoftmax, tempDir } from './gguf-oracles.js';
import { FIXTURES, maxRelDiff, rng, testGpu } from './helpers.js';
import { randomRefLora } from './model-reference.js';
import { TINY_CONFIG, writeTinyModel } from './tiny-model.js';

const dir = tempDir();
let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => {
  gpu?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const B = 2;
const T = 7;
const SETTINGS: LoraSettings = { rank: 4, alpha: 8, rslora: false, dropout: 0, targets: [...PROJECTIONS] };
const HYPER: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };
// What our own exports of these types show against the reference (test/export.test.ts); here both sides evaluate
// the same quantized weights, and the gap is llama.cpp's activation quantization in its dot products.
const LLAMA_BOUND: Partial<Record<GgufPreset, number>> = { q8_0: 5e-2, q4_k_m: 0.3 };
/** Gradients and llama.cpp on one preset per model (each costs a trainer's pipelines or a child process). */
const FULL_CHECK: Record<string, GgufPreset> = { 'tiny-tied': 'q8_0', wide: 'q4_k_m' };

/** Our f32 export of a model folder, quantized by llama.cpp to `preset`. */
async function llamaQuantized(modelDir: string, name: string, preset: GgufPreset): Promise<string> {
  const f32 = join(dir, `${name}-f32.gguf`);
  await exportGguf({ outPath: f32, config: loadModelConfig(modelDir), tokenizerDir: modelDir, tensors: fixtureSources(modelDir), quantization: 'f32', name });
  const out = join(dir, `${name}-${preset}.gguf`);
  await llamaQuantize(f32, out, presetFileType(preset));
  return out;
}

/** The file's weights dequantized by ggml itself (dequantize_row_*), uploaded as f32. */
function ggmlDequantizedWeights(f: GgufFile, config: ModelConfig): ModelWeights {
  const ggml = loadGgml();
  const values = (name: string, count: number) => {
    const t = f.tensors.get(name)!;
    const bytes = readGgufTensorBytes(f, t);
    return isQuantized(t.type) ? ggml.dequantize(t.type, bytes, count) : dequantizeRows(t.type, bytes, count);
  };
  return buildModel<GpuMatrix, GPUBuffer>(
    config,
    (t) => matrixFromF32(gpu, values(t.gguf, t.shape[0]! * t.shape[1]!), t.shape[0]!, t.shape[1]!, 'f32', t.gguf),
    (t) => gpu.upload(values(t.gguf, t.shape[0]!), t.gguf),
  );
}

function tokens(config: ModelConfig, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: B * T }, () => Math.floor(r() * config.vocabSize));
}

async function forward(config: ModelConfig, weights: ModelWeights, ids: number[], lora?: LoraWeights): Promise<Float32Array> {
  const graph = new Qwen3Graph(gpu, config, weights, { B, T, mode: 'logits', lora });
  try {
    graph.setBatch(plainBatch(ids, B, T));
    graph.program.run();
    return await gpu.readF32(graph.logits!, B * T * config.vocabSize);
  } finally {
    graph.destroy();
  }
}

async function loraGrads(config: ModelConfig, weights: ModelWeights, ids: number[]): Promise<Map<string, Float32Array>> {
  const lora = initLora(gpu, config, SETTINGS, 0);
  writeLoraTensors(gpu, lora, randomRefLora(config, SETTINGS, 5, 0.5).tensors, 'weights');
  const trainer = new LoraTrainer(gpu, config, weights, lora, { B, T, recompute: true, hyper: HYPER });
  try {
    const b = plainBatch(ids, B, T, shiftLabels(ids, B, T));
    trainer.step([{ ...b, targets: b.targets! }], 1, 0);
    return await readLoraTensors(gpu, lora, 'grads');
  } finally {
    trainer.destroy();
    releaseLora(gpu, lora);
  }
}

/** max |Δ log p| between llama.cpp's distributions and log_softmax of our logits, and how many argmaxes agree. */
function compareWithLlama(probs: number[][][], logits: Float32Array, V: number): { maxDiff: number; agree: number } {
  let maxDiff = 0;
  let agree = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const lp = logSoftmax(logits, (b * T + t) * V, V);
      const got = probs[b]![t]!;
      for (let v = 0; v < V; v++) maxDiff = Math.max(maxDiff, Math.abs(Math.log(got[v]!) - lp[v]!));
      if (argmax(got) === argmax(lp)) agree++;
    }
  }
  return { maxDiff, agree };
}

const wideDir = join(dir, 'wide');
const quantizedFiles = new Map<string, string>();
const models: { name: string; dir: () => string; presets: GgufPreset[]; types: GgmlType[] }[] = [
  { name: 'tiny-tied', dir: () => join(FIXTURES, 'tiny-tied', 'model'), presets: ['q8_0', 'q4_0', 'q4_k_m', 'q5_k_m', 'q6_k'], types: [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.Q5_1] },
  {
    name: 'wide',
    dir: () => writeTinyModel(wideDir, { config: { ...TINY_CONFIG, hiddenSize: 256, intermediateSize: 512, headDim: 64, tieWordEmbeddings: false }, seed: 3 }),
    presets: ['q4_k_m', 'q5_k_m', 'q6_k'],
    types: [GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K],
  },
];

for (const m of models) {
  describe(`${m.name} quantized by llama.cpp`, () => {
    const seen = new Set<GgmlType>();
    afterAll(() => {
      // Every block type this model's files should exercise did occur.
      for (const t of m.types) expect(seen.has(t), ggmlTypeName(t)).toBe(true);
    });
    for (const preset of m.presets) {
      const full = FULL_CHECK[m.name] === preset;
      it(`${preset}: forward equals ggml's dequantization (≤ 1e-5)${full ? ', LoRA gradients equal those on it, llama.cpp agrees' : ''}`, async () => {
        const file = await llamaQuantized(m.dir(), `${m.name}-${preset}`, preset);
        quantizedFiles.set(`${m.name}-${preset}`, file);
        const f = readGguf(fileSource(file), file);
        for (const t of f.tensors.values()) seen.add(t.type);
        const config = ggufModelConfig(f);
        const ids = tokens(config, 7);
        const quantized = loadGgufWeights(gpu, f, config, 'f32');
        expect(quantized.layers[0]!.proj.q_proj.dtype).not.toBe('f32');
        const reference = ggmlDequantizedWeights(f, config);
        try {
          const ours = await forward(config, quantized, ids);
          const ref = await forward(config, reference, ids);
          const rel = maxRelDiff(ours, ref);
          console.log(`${m.name} ${preset}: forward max rel ${rel.toExponential(2)}`);
          expect(rel).toBeLessThanOrEqual(1e-5);
          if (full) {
            const gq = await loraGrads(config, quantized, ids);
            const gr = await loraGrads(config, reference, ids);
            let worst = 0;
            for (const [name, g] of gr) {
              worst = Math.max(worst, maxRelDiff(gq.get(name)!, g));
              expect(maxRelDiff(gq.get(name)!, g), name).toBeLessThanOrEqual(1e-5);
            }
            console.log(`${m.name} ${preset}: LoRA gradients max rel ${worst.toExponential(2)}`);
            const bound = LLAMA_BOUND[preset]!;
            const rows = Array.from({ length: B }, (_, b) => ids.slice(b * T, (b + 1) * T));
            const probs = await llamaProbabilities({ model: file, vocab: config.vocabSize, rows });
            const { maxDiff, agree } = compareWithLlama(probs, ours, config.vocabSize);
            console.log(`${m.name} ${preset}: llama.cpp max |Δ log p| ${maxDiff.toExponential(2)}, argmax agrees ${agree}/${B * T}`);
            expect(maxDiff).toBeLessThan(bound);
          }
        } finally {
          releaseModelWeights(gpu, quantized);
          releaseModelWeights(gpu, reference);
        }
      });
    }
  });
}

describe('a LoRA GGUF for a quantized base', () => {
  it('applied by llama.cpp to the same q4_k_m file, gives our adapted log-probs; the Modelfile has FROM and ADAPTER', async () => {
    const file = quantizedFiles.get('wide-q4_k_m') ?? await llamaQuantized(models[1]!.dir(), 'wide-q4_k_m', 'q4_k_m');
    const f = readGguf(fileSource(file), file);
    const config = ggufModelConfig(f);
    const ids = tokens(config, 11);
    const weights = loadGgufWeights(gpu, f, config, 'f32');
    const lora = initLora(gpu, config, SETTINGS, 0);
    writeLoraTensors(gpu, lora, randomRefLora(config, SETTINGS, 9, 1).tensors, 'weights');
    try {
      const adapted = await forward(config, weights, ids, lora);
      const plain = await forward(config, weights, ids);
      const adapterDir = join(dir, 'wide-adapter');
      await savePeftAdapter(gpu, lora, adapterDir, file);
      const [adapter, modelfile] = await runExport({
        model_name_or_path: file, adapter_name_or_path: adapterDir, export_dir: join(dir, 'wide-export'), export_format: 'gguf-lora', export_quantization: 'f32', export_size: 5,
      });
      const text = readFileSync(modelfile!, 'utf8');
      expect(text).toContain(`FROM ${file}\n`);
      expect(text).toContain('ADAPTER ./adapter.gguf\n');
      const rows = Array.from({ length: B }, (_, b) => ids.slice(b * T, (b + 1) * T));
      const probs = await llamaProbabilities({ model: file, vocab: config.vocabSize, rows, lora: { path: adapter!, scale: 1 } });
      const { maxDiff, agree } = compareWithLlama(probs, adapted, config.vocabSize);
      const effect = compareWithLlama(probs, plain, config.vocabSize).maxDiff;
      console.log(`wide q4_k_m + LoRA GGUF: llama.cpp max |Δ log p| ${maxDiff.toExponential(2)} (adapter effect ${effect.toFixed(3)}), argmax agrees ${agree}/${B * T}`);
      expect(maxDiff).toBeLessThan(LLAMA_BOUND.q4_k_m!);
      // The adapter changes the distributions well beyond that: llama.cpp did apply it.
      expect(effect).toBeGreaterThan(3 * maxDiff);
    } finally {
      releaseLora(gpu, lora);
      releaseModelWeights(gpu, weights);
    }
  });
});
