// Exported Qwen3 fixtures: parsed by @huggingface/gguf, loaded and run by llama.cpp (node-llama-cpp,
// in a child process), whose next-token distribution must match the HF reference logits.
import { gguf } from '@huggingface/gguf';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../src/model/config.js';
import { Checkpoint } from '../src/model/safetensors.js';
import { exportGguf } from '../src/gguf/export.js';
import { GgmlType } from '../src/gpu/ggml-types.js';
import type { GgufPreset } from '../src/gguf/presets.js';
import { FIXTURES, argmax, fixtureSources, llamaProbabilities, logSoftmax, tempDir } from './gguf-oracles.js';

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function exportFixture(fixture: string, quantization: GgufPreset): Promise<string> {
  const modelDir = join(FIXTURES, fixture, 'model');
  const outPath = join(dir, `${fixture}-${quantization}.gguf`);
  await exportGguf({ outPath, config: loadModelConfig(modelDir), tokenizerDir: modelDir, tensors: fixtureSources(modelDir), quantization, name: fixture });
  return outPath;
}

/** llama.cpp's log-probabilities against log_softmax(base_logits): max |Δ| and how many argmaxes agree. */
async function compareWithReference(fixture: string, model: string): Promise<{ maxDiff: number; argmaxAgree: number; positions: number }> {
  const c = Checkpoint.open(join(FIXTURES, fixture, 'case.safetensors'));
  const [B, T, V] = c.info('base_logits').shape as [number, number, number];
  const ids = c.readF32('input_ids');
  const logits = c.readF32('base_logits');
  const rows = Array.from({ length: B }, (_, b) => Array.from(ids.subarray(b * T, (b + 1) * T)));
  const probs = await llamaProbabilities({ model, vocab: V, rows });
  let maxDiff = 0;
  let argmaxAgree = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const ref = logSoftmax(logits, (b * T + t) * V, V);
      const got = probs[b]![t]!;
      for (let v = 0; v < V; v++) maxDiff = Math.max(maxDiff, Math.abs(Math.log(got[v]!) - ref[v]!));
      if (argmax(got) === argmax(ref)) argmaxAgree++;
    }
  }
  return { maxDiff, argmaxAgree, positions: B * T };
}

describe('exportGguf on the fixtures', () => {
  for (const fixture of ['tiny-tied', 'small-untied']) {
    it(`${fixture} as f32: metadata and tensors parse, llama.cpp reproduces the reference`, async () => {
      const path = await exportFixture(fixture, 'f32');
      const config = loadModelConfig(join(FIXTURES, fixture, 'model'));
      const parsed = await gguf(path, { allowLocalFile: true });
      const metadata = parsed.metadata as Record<string, unknown>;
      const tensorInfos = parsed.tensorInfos;
      expect(metadata['general.architecture']).toBe('qwen3');
      expect(metadata['qwen3.block_count']).toBe(config.numLayers);
      expect(metadata['qwen3.attention.head_count_kv']).toBe(config.numKvHeads);
      expect(metadata['qwen3.attention.key_length']).toBe(config.headDim);
      expect(metadata['tokenizer.ggml.tokens']).toHaveLength(config.vocabSize);
      expect(metadata['tokenizer.ggml.eos_token_id']).toBe(config.vocabSize - 1); // <|im_end|>
      expect(metadata['tokenizer.ggml.padding_token_id']).toBe(config.vocabSize - 3); // <|endoftext|>
      expect(metadata['tokenizer.ggml.add_bos_token']).toBe(false);
      expect(String(metadata['tokenizer.chat_template'])).toContain('<|im_start|>');
      const names = tensorInfos.map((t) => t.name);
      expect(names.includes('output.weight')).toBe(!config.tieWordEmbeddings);
      const q = tensorInfos.find((t) => t.name === 'blk.1.attn_q.weight')!;
      expect(q.shape.map(Number)).toEqual([config.hiddenSize, config.numHeads * config.headDim]);
      expect(tensorInfos.every((t) => Number(t.dtype) === GgmlType.F32)).toBe(true);

      const { maxDiff, argmaxAgree, positions } = await compareWithReference(fixture, path);
      expect(maxDiff).toBeLessThan(2e-3);
      expect(argmaxAgree).toBe(positions);
    });
  }
});

describe('quantized exports run in llama.cpp', () => {
  // Random tiny models have flat next-token distributions, so a few argmaxes flip under quantization.
  const bounds = { q8_0: { maxDiff: 0.05, agree: 0.95 }, q4_k_m: { maxDiff: 0.3, agree: 0.7 } };
  for (const fixture of ['tiny-tied', 'small-untied']) {
    for (const preset of ['q8_0', 'q4_k_m'] as const) {
      it(`${fixture} as ${preset} stays close to the reference`, async () => {
        const { maxDiff, argmaxAgree, positions } = await compareWithReference(fixture, await exportFixture(fixture, preset));
        expect(maxDiff).toBeLessThan(bounds[preset].maxDiff);
        expect(argmaxAgree / positions).toBeGreaterThanOrEqual(bounds[preset].agree);
      });
    }
  }
});
