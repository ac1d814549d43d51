// Every quantization preset against llama.cpp's own llama-quantize run on our f32 export: the same
// type for every tensor (type mixes, fallbacks for rows that are not whole blocks) and the same bytes.
import { gguf } from '@huggingface/gguf';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from '../src/model/config.js';
import { loadModelConfig } from '../src/model/config.js';
import { exportGguf, type SourceTensor } from '../src/gguf/export.js';
import { GgmlType, ggmlTensorBytes } from '../src/gpu/ggml-types.js';
import { GGUF_PRESETS, presetFileType, useMoreBits, type GgufPreset } from '../src/gguf/presets.js';
import { randArray } from './helpers.js';
import { FIXTURES, fixtureSources, llamaQuantize, readGgufTensors, tempDir } from './gguf-oracles.js';

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Random weights of a Qwen3 shape whose rows are whole 256-blocks, so the K-quant mixes apply unchanged. */
function syntheticModel(c: ModelConfig): SourceTensor[] {
  const H = c.hiddenSize;
  const shapes: [string, number[]][] = [['model.embed_tokens.weight', [c.vocabSize, H]], ['model.norm.weight', [H]]];
  if (!c.tieWordEmbeddings) shapes.push(['lm_head.weight', [c.vocabSize, H]]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    shapes.push(
      [`${p}input_layernorm.weight`, [H]], [`${p}post_attention_layernorm.weight`, [H]],
      [`${p}self_attn.q_norm.weight`, [c.headDim]], [`${p}self_attn.k_norm.weight`, [c.headDim]],
      [`${p}self_attn.q_proj.weight`, [c.numHeads * c.headDim, H]], [`${p}self_attn.k_proj.weight`, [c.numKvHeads * c.headDim, H]],
      [`${p}self_attn.v_proj.weight`, [c.numKvHeads * c.headDim, H]], [`${p}self_attn.o_proj.weight`, [H, c.numHeads * c.headDim]],
      [`${p}mlp.gate_proj.weight`, [c.intermediateSize, H]], [`${p}mlp.up_proj.weight`, [c.intermediateSize, H]],
      [`${p}mlp.down_proj.weight`, [H, c.intermediateSize]],
    );
  }
  return shapes.map(([name, shape], i) => ({ name, shape, read: () => randArray(shape.reduce((a, b) => a * b, 1), 1000 + i, 0.05) }));
}

const fixtureConfig = loadModelConfig(join(FIXTURES, 'tiny-tied', 'model'));
const wide: ModelConfig = {
  ...fixtureConfig, hiddenSize: 256, intermediateSize: 512, numLayers: 8, numHeads: 4, numKvHeads: 2, headDim: 64, tieWordEmbeddings: true,
};

const models: { label: string; config: ModelConfig; tokenizerDir: string; tensors: () => SourceTensor[] }[] = [
  { label: 'small-untied fixture (rows of 96 and 256)', config: loadModelConfig(join(FIXTURES, 'small-untied', 'model')), tokenizerDir: join(FIXTURES, 'small-untied', 'model'), tensors: () => fixtureSources(join(FIXTURES, 'small-untied', 'model')) },
  { label: '8-layer tied model with rows of 256 and 512', config: wide, tokenizerDir: join(FIXTURES, 'tiny-tied', 'model'), tensors: () => syntheticModel(wide) },
];

describe('presets match llama-quantize', () => {
  models.forEach((m, mi) => {
    const f32Path = join(dir, `m${mi}-f32.gguf`);
    it(`${m.label}: f32 export is the input`, async () => {
      await exportGguf({ outPath: f32Path, config: m.config, tokenizerDir: m.tokenizerDir, tensors: m.tensors(), quantization: 'f32' });
      const tensors = await readGgufTensors(f32Path);
      for (const t of tensors.values()) expect(t.type).toBe(GgmlType.F32);
    });
    for (const preset of GGUF_PRESETS.filter((p) => p !== 'f32' && p !== 'f16' && p !== 'bf16') as GgufPreset[]) {
      it(`${m.label}: ${preset} has llama-quantize's types and bytes`, async () => {
        const ours = join(dir, `m${mi}-${preset}.gguf`);
        const theirs = join(dir, `m${mi}-${preset}-llama.gguf`);
        await exportGguf({ outPath: ours, config: m.config, tokenizerDir: m.tokenizerDir, tensors: m.tensors(), quantization: preset });
        await llamaQuantize(f32Path, theirs, presetFileType(preset));
        const a = await readGgufTensors(ours);
        const b = await readGgufTensors(theirs);
        expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
        for (const [name, t] of a) {
          const r = b.get(name)!;
          expect({ name, type: t.type }).toEqual({ name, type: r.type });
          const size = ggmlTensorBytes(t.type, t.ne);
          expect(Buffer.compare(t.bytes.subarray(0, size), r.bytes.subarray(0, size)), name).toBe(0);
        }
        const meta = (await gguf(ours, { allowLocalFile: true })).metadata as Record<string, unknown>;
        expect(meta['general.file_type']).toBe(presetFileType(preset));
      });
    }
  });

  it('use_more_bits picks the first and last eighth and every third layer between', () => {
    expect([...Array(28).keys()].filter((l) => useMoreBits(l, 28))).toEqual([0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]);
  });
});
