// GGUF names as llama.cpp's converter derives them. The expected values are what gguf-py's
// Metadata.get_model_id_components / id_to_title, size_label and naming_convention return for these ids
// (run once with llama.cpp's gguf-py; the ids are real hub names).
import { describe, expect, it } from 'vitest';
import { ggufFileName, ggufNaming, sizeLabelOf } from '../src/gguf/model-name.js';
import { modelParameterCount } from '../src/model/families.js';
import { QWEN3_SIZES } from '../src/model/model-config.js';
import { hubRepoIdOfSnapshot } from '../src/model/hub.js';

const CASES: [id: string, params: number, names: Record<string, string | undefined>, file: string][] = [
  ['Qwen3-0.6B', 596049920, { name: 'Qwen3 0.6B', basename: 'Qwen3', sizeLabel: '0.6B' }, 'Qwen3-0.6B-Q4_K_M.gguf'],
  ['Qwen/Qwen3-0.6B', 596049920, { name: 'Qwen3 0.6B', basename: 'Qwen3', sizeLabel: '0.6B', organization: 'Qwen' }, 'Qwen3-0.6B-Q4_K_M.gguf'],
  ['Qwen3-4B-Instruct-2507', 4022468096, { name: 'Qwen3 4B Instruct 2507', basename: 'Qwen3', sizeLabel: '4B', finetune: 'Instruct', version: '2507' }, 'Qwen3-4B-Instruct-2507-Q4_K_M.gguf'],
  ['Mistral-7B-Instruct-v0.2', 7241732096, { name: 'Mistral 7B Instruct v0.2', basename: 'Mistral', sizeLabel: '7B', finetune: 'Instruct', version: 'v0.2' }, 'Mistral-7B-Instruct-v0.2-Q4_K_M.gguf'],
  ['bloom-7b1', 7069016064, { name: 'Bloom 7b1', basename: 'bloom', sizeLabel: '7.1B' }, 'bloom-7.1B-Q4_K_M.gguf'],
  ['model', 66000, { name: 'Model', sizeLabel: '66K' }, 'Model-66K-Q4_K_M.gguf'],
  ['tiny-tied', 123456, { name: 'Tiny Tied', sizeLabel: '123K' }, 'Tiny-Tied-123K-Q4_K_M.gguf'],
  ['Llama-3.1-8B-Instruct', 8030261248, { name: 'Llama 3.1 8B Instruct', basename: 'Llama-3.1', sizeLabel: '8B', finetune: 'Instruct' }, 'Llama-3.1-8B-Instruct-Q4_K_M.gguf'],
  ['phi-2', 2779683840, { name: 'Phi 2', basename: 'phi', sizeLabel: '2.8B', version: '2' }, 'phi-2.8B-2-Q4_K_M.gguf'],
  ['Qwen2.5-Coder-1.5B-Instruct', 1543714304, { name: 'Qwen2.5 Coder 1.5B Instruct', basename: 'Qwen2.5-Coder', sizeLabel: '1.5B', finetune: 'Instruct' }, 'Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf'],
  ['Meta-Llama-3-8B-Instruct-32k', 8030261248, { name: 'Meta Llama 3 8B Instruct 32k', basename: 'Meta-Llama-3', sizeLabel: '8B', finetune: 'Instruct-32k' }, 'Meta-Llama-3-8B-Instruct-32k-Q4_K_M.gguf'],
  ['gpt2-small', 124439808, { name: 'Gpt2 Small', basename: 'gpt2', sizeLabel: 'small' }, 'gpt2-small-Q4_K_M.gguf'],
];

describe('GGUF names as llama.cpp\'s converter writes them', () => {
  for (const [id, params, names, file] of CASES) {
    it(`${id}`, () => {
      const n = ggufNaming(id, params);
      expect(Object.fromEntries(Object.entries(n).filter(([, v]) => v !== undefined))).toEqual(names);
      expect(ggufFileName(n, 'q4_k_m')).toBe(file);
    });
  }

  it('size labels from parameter counts', () => {
    expect([999, 66000, 596049920, 1.5e9, 8030261248, 2.5e12].map(sizeLabelOf)).toEqual(['1.0K', '66K', '596M', '1.5B', '8.0B', '2.5T']);
  });

  it('Qwen3-0.6B counts 596M parameters (embeddings tied)', () => {
    expect(modelParameterCount(QWEN3_SIZES['0.6B'])).toBe(596049920);
  });

  it('a hub cache snapshot folder stands for its repo id', () => {
    expect(hubRepoIdOfSnapshot('/home/u/.cache/huggingface/hub/models--Qwen--Qwen3-0.6B/snapshots/c1899de289a04d12100db370d81485cdf75e47ca')).toBe('Qwen/Qwen3-0.6B');
    expect(hubRepoIdOfSnapshot('/data/models--Qwen--Qwen3-0.6B/snapshots/abc/')).toBe('Qwen/Qwen3-0.6B');
    expect(hubRepoIdOfSnapshot('/data/Qwen3-0.6B')).toBeUndefined();
  });
});
