// The adapter alone as a llama.cpp LoRA GGUF: llama.cpp applies it on the exported base model and
// reproduces PEFT's logits with the adapter; and the Ollama Modelfile that points at the files.
import { gguf } from '@huggingface/gguf';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../src/model/config.js';
import { Checkpoint } from '../src/model/safetensors.js';
import { exportGguf, exportLoraGguf, writeOllamaModelfile } from '../src/gguf/export.js';
import { FIXTURES, argmax, fixtureSources, llamaProbabilities, logSoftmax, tempDir } from './gguf-oracles.js';

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('exportLoraGguf', () => {
  for (const fixture of ['tiny-tied', 'small-untied']) {
    it(`${fixture}: llama.cpp with the LoRA GGUF reproduces PEFT's logits`, async () => {
      const modelDir = join(FIXTURES, fixture, 'model');
      const config = loadModelConfig(modelDir);
      const adapterConfig = JSON.parse(readFileSync(join(FIXTURES, fixture, 'adapter', 'adapter_config.json'), 'utf8')) as { lora_alpha: number; r: number };
      const base = join(dir, `${fixture}.gguf`);
      const lora = join(dir, `${fixture}-lora.gguf`);
      await exportGguf({ outPath: base, config, tokenizerDir: modelDir, tensors: fixtureSources(modelDir), quantization: 'f32' });
      await exportLoraGguf({ outPath: lora, config, tensors: fixtureSources(join(FIXTURES, fixture, 'adapter', 'adapter_model.safetensors')), alpha: adapterConfig.lora_alpha });

      const parsed = await gguf(lora, { allowLocalFile: true });
      const meta = parsed.metadata as Record<string, unknown>;
      expect(meta['general.type']).toBe('adapter');
      expect(meta['adapter.type']).toBe('lora');
      expect(meta['adapter.lora.alpha']).toBe(adapterConfig.lora_alpha);
      const a = parsed.tensorInfos.find((t) => t.name === 'blk.0.attn_q.weight.lora_a')!;
      const b = parsed.tensorInfos.find((t) => t.name === 'blk.0.attn_q.weight.lora_b')!;
      expect(a.shape.map(Number)).toEqual([config.hiddenSize, adapterConfig.r]);
      expect(b.shape.map(Number)).toEqual([adapterConfig.r, config.numHeads * config.headDim]);
      expect(parsed.tensorInfos).toHaveLength(config.numLayers * 7 * 2);

      const c = Checkpoint.open(join(FIXTURES, fixture, 'case.safetensors'));
      const [B, T, V] = c.info('lora_logits').shape as [number, number, number];
      const ids = c.readF32('input_ids');
      const loraLogits = c.readF32('lora_logits');
      const baseLogits = c.readF32('base_logits');
      const rows = Array.from({ length: B }, (_, i) => Array.from(ids.subarray(i * T, (i + 1) * T)));
      const probs = await llamaProbabilities({ model: base, vocab: V, rows, lora: { path: lora, scale: 1 } });
      let maxDiff = 0;
      let adapterEffect = 0;
      for (let i = 0; i < B; i++) {
        for (let t = 0; t < T; t++) {
          const ref = logSoftmax(loraLogits, (i * T + t) * V, V);
          const without = logSoftmax(baseLogits, (i * T + t) * V, V);
          const got = probs[i]![t]!;
          for (let v = 0; v < V; v++) {
            maxDiff = Math.max(maxDiff, Math.abs(Math.log(got[v]!) - ref[v]!));
            adapterEffect = Math.max(adapterEffect, Math.abs(without[v]! - ref[v]!));
          }
          // Same prediction, unless the reference itself has a near-tie within the tolerance.
          expect(ref[argmax(ref)]! - ref[argmax(got)]!).toBeLessThan(2e-3);
        }
      }
      expect(maxDiff).toBeLessThan(2e-3);
      // The adapter changes the distribution far more than the tolerance, so the check is not vacuous.
      expect(adapterEffect).toBeGreaterThan(20 * maxDiff);
    });
  }

  it('rejects adapter tensors that are not LoRA matrices of a projection', async () => {
    const config = loadModelConfig(join(FIXTURES, 'tiny-tied', 'model'));
    const bad = { name: 'base_model.model.model.embed_tokens.lora_A.weight', shape: [4, 64], read: () => new Float32Array(256) };
    await expect(exportLoraGguf({ outPath: join(dir, 'bad.gguf'), config, tensors: [bad], alpha: 8 })).rejects.toThrow(/not a LoRA matrix/);
  });
});

describe('writeOllamaModelfile', () => {
  it('points at the GGUF (and adapter) and uses the ChatML template with its stop tokens', () => {
    const path = writeOllamaModelfile(dir, 'model.gguf', { adapterFileName: 'lora.gguf', system: 'You are terse.' });
    const text = readFileSync(path, 'utf8');
    expect(text.split('\n')[0]).toBe('FROM ./model.gguf');
    expect(text).toContain('ADAPTER ./lora.gguf');
    expect(text).toContain('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"""');
    expect(text).toContain('SYSTEM """You are terse."""');
    expect(text).toContain('PARAMETER stop "<|im_end|>"');
  });
});
