// `node train.js --model_name_or_path FILE.gguf` (and an Ollama name) through the real CLI: trains on a q8_0 GGUF
// and on a q4_k_m one kept quantized on the GPU, and writes the PEFT adapter; quantization_bit quantizes an HF base;
// a GGUF of another architecture and a truncated one end in one line naming the file.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportGguf } from '../src/gguf/export.js';
import { gv, type GgufValue } from '../src/gguf/gguf-encoder.js';
import { writeGguf } from '../src/gguf/writer.js';
import { loadModelConfig } from '../src/model/config.js';
import { fixtureSources } from './gguf-oracles.js';
import { buildCli, runCli, TINY_CONFIG, tinyTrainYaml, writeTinyDataset, writeTinyModel } from './tiny-model.js';

let root: string;
let entry: string;
let data: string;
const files: Record<string, string> = {};

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'loraforge-gguf-train-'));
  entry = buildCli('gguf-train');
  data = writeTinyDataset(join(root, 'data'), 6);
  const model = writeTinyModel(join(root, 'model'));
  for (const q of ['q8_0', 'q4_k_m'] as const) {
    files[q] = join(root, `tiny-${q}.gguf`);
    await exportGguf({ outPath: files[q]!, config: loadModelConfig(model), tokenizerDir: model, tensors: fixtureSources(model), quantization: q, name: 'tiny' });
  }
}, 180_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function train(modelPath: string, name: string, extra: Record<string, unknown> = {}) {
  const out = join(root, name);
  const yaml = join(root, `${name}.yaml`);
  writeFileSync(yaml, tinyTrainYaml(modelPath, data, out, { max_steps: 2, ...extra }));
  return { out, r: await runCli(entry, ['train', yaml], root, 120_000) };
}

describe('training on a GGUF base', () => {
  for (const q of ['q8_0', 'q4_k_m']) {
    it(`${q} file: two steps, a PEFT adapter naming the file`, async () => {
      const { out, r } = await train(files[q]!, `out-${q}`);
      expect(r.code, r.stderr).toBe(0);
      expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
      const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
      expect(cfg.base_model_name_or_path).toBe(files[q]);
      const log = readFileSync(join(out, 'trainer_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const losses = log.filter((e) => typeof e.loss === 'number').map((e) => e.loss as number);
      expect(losses.length).toBeGreaterThan(0);
      for (const l of losses) expect(Number.isFinite(l) && l > 0).toBe(true);
    }, 180_000);
  }

  it('an Ollama model name from the store', async () => {
    const store = join(root, 'ollama');
    const blob = readFileSync(files.q8_0!);
    const digest = createHash('sha256').update(blob).digest('hex');
    mkdirSync(join(store, 'blobs'), { recursive: true });
    copyFileSync(files.q8_0!, join(store, 'blobs', `sha256-${digest}`));
    mkdirSync(join(store, 'manifests', 'registry.ollama.ai', 'library', 'tiny'), { recursive: true });
    writeFileSync(join(store, 'manifests', 'registry.ollama.ai', 'library', 'tiny', 'q8'), JSON.stringify({
      schemaVersion: 2,
      layers: [{ mediaType: 'application/vnd.ollama.image.model', digest: `sha256:${digest}`, size: blob.length }],
    }));
    process.env.OLLAMA_MODELS = store;
    try {
      const { out, r } = await train('tiny:q8', 'out-ollama', { max_steps: 1 });
      expect(r.code, r.stderr).toBe(0);
      expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
    } finally {
      delete process.env.OLLAMA_MODELS;
    }
  }, 180_000);

  it('quantization_bit 4 on an HF base: quantized while uploaded (Q4_K / Q6_K blocks), trains; refused on a GGUF base', async () => {
    const wide = writeTinyModel(join(root, 'wide'), { config: { ...TINY_CONFIG, hiddenSize: 256, intermediateSize: 512, headDim: 64 } });
    const { out, r } = await train(wide, 'out-qbit4', { quantization_bit: 4 });
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
    const bad = await train(files.q8_0!, 'out-qbit-gguf', { quantization_bit: 8 });
    const lines = bad.r.stderr.split('\n').filter((l) => l.startsWith('error:'));
    expect(lines, bad.r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/quantization_bit: .*is a GGUF base/);
    expect(bad.r.code).toBe(1);
  }, 180_000);

  it('refuses another architecture and a truncated file in one line', async () => {
    const llama = join(root, 'llama.gguf');
    await writeGguf(llama, { metadata: new Map<string, GgufValue>([['general.architecture', gv.str('llama')]]), tensors: [] });
    const truncated = join(root, 'truncated.gguf');
    writeFileSync(truncated, readFileSync(files.q8_0!).subarray(0, 5000));
    for (const [file, message] of [[llama, /architecture "llama" is not supported/], [truncated, /truncated|end of file/]] as const) {
      const { out, r } = await train(file, `bad-${file.length}`);
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toContain(file);
      expect(lines[0]).toMatch(message);
      expect(r.code).toBe(1);
      expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(false);
    }
  }, 180_000);
});
