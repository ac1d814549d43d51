import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import type { Gpu } from '../src/gpu/device.js';
import { f32ToBf16, packBf16 } from '../src/gpu/dtype.js';
import { matrixRowBytes, type GpuMatrix, type WeightDType } from '../src/gpu/matrix.js';
import { loadModelConfig, type ModelConfig } from '../src/model/config.js';
import { writeRandomModel } from '../src/model/random-model.js';
import { Checkpoint, writeSafetensors, type TensorToWrite } from '../src/model/safetensors.js';
import { loadModelWeights, releaseModelWeights } from '../src/model/weights.js';
import { testGpu, FIXTURES } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'weights-test-'));

let gpu: Gpu;
/** Small bindings (7 f32 rows of 64) so that matrices split into uneven parts. */
let splitGpu: Gpu;
beforeAll(async () => {
  gpu = await testGpu();
  splitGpu = await testGpu({ maxBindingBytes: 7 * 256 });
});
afterAll(() => {
  gpu?.destroy();
  splitGpu?.destroy();
  rmSync(tmp, { recursive: true, force: true });
});

/** The matrix's rows read back from the GPU in its own byte layout, concatenated over parts. */
async function readMatrixBytes(g: Gpu, m: GpuMatrix): Promise<Uint8Array> {
  const rowBytes = matrixRowBytes(m.cols, m.dtype);
  const out = new Uint8Array(m.rows * rowBytes);
  let expectedStart = 0;
  for (const p of m.parts) {
    expect(p.rowStart).toBe(expectedStart);
    expect(p.rows * rowBytes).toBeLessThanOrEqual(g.maxBindingBytes);
    out.set(new Uint8Array(await g.read(p.buffer, p.rows * rowBytes)), p.rowStart * rowBytes);
    expectedStart += p.rows;
  }
  expect(expectedStart).toBe(m.rows);
  return out;
}

/** What the GPU should hold for a checkpoint tensor in `dtype`. */
function expectedBytes(ckpt: Checkpoint, name: string, dtype: WeightDType): Uint8Array {
  const t = ckpt.info(name);
  if (t.dtype === 'BF16' && dtype === 'bf16') return ckpt.readBytes(name);
  const values = ckpt.readF32(name);
  const data = dtype === 'bf16' ? packBf16(values) : values;
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

async function checkLoaded(g: Gpu, dir: string, dtype: WeightDType): Promise<void> {
  const config = loadModelConfig(dir);
  const ckpt = Checkpoint.open(dir);
  const before = g.liveBytes;
  try {
    const w = loadModelWeights(g, ckpt, config, dtype);
    expect(w.layers.length).toBe(config.numLayers);
    expect(w.lmHead === w.embed).toBe(config.tieWordEmbeddings);
    const last = config.numLayers - 1;
    const matrices: [string, GpuMatrix][] = [
      ['model.embed_tokens.weight', w.embed],
      [`model.layers.0.self_attn.q_proj.weight`, w.layers[0]!.proj.q_proj],
      [`model.layers.${last}.self_attn.v_proj.weight`, w.layers[last]!.proj.v_proj],
      [`model.layers.${last}.mlp.down_proj.weight`, w.layers[last]!.proj.down_proj],
    ];
    if (!config.tieWordEmbeddings) matrices.push(['lm_head.weight', w.lmHead]);
    for (const [name, m] of matrices) {
      expect([m.rows, m.cols]).toEqual(ckpt.info(name).shape);
      expect(m.dtype).toBe(dtype);
      expect(Buffer.from(await readMatrixBytes(g, m))).toEqual(Buffer.from(expectedBytes(ckpt, name, dtype)));
    }
    expect(await g.readF32(w.layers[last]!.kNorm!, config.headDim)).toEqual(ckpt.readF32(`model.layers.${last}.self_attn.k_norm.weight`));
    expect(await g.readF32(w.finalNorm, config.hiddenSize)).toEqual(ckpt.readF32('model.norm.weight'));
    releaseModelWeights(g, w);
    expect(g.liveBytes).toBe(before);
  } finally {
    ckpt.close();
  }
}

describe('loading Qwen3 weights', () => {
  for (const name of ['tiny-tied', 'small-untied']) {
    for (const dtype of ['f32', 'bf16'] as const) {
      it(`loads ${name} as ${dtype}`, async () => {
        await checkLoaded(gpu, join(FIXTURES, name, 'model'), dtype);
      });
    }
  }

  it('splits matrices into uneven parts under a small binding limit', async () => {
    const dir = join(FIXTURES, 'tiny-tied', 'model');
    await checkLoaded(splitGpu, dir, 'f32');
    await checkLoaded(splitGpu, dir, 'bf16');
    const ckpt = Checkpoint.open(dir);
    const w = loadModelWeights(splitGpu, ckpt, loadModelConfig(dir), 'f32');
    // 512 rows of 64 f32 in parts of 7 rows.
    expect(w.embed.parts.length).toBe(Math.ceil(512 / 7));
    expect(w.embed.parts.at(-1)!.rows).toBe(512 % 7);
    releaseModelWeights(splitGpu, w);
    ckpt.close();
  });
});

describe('random checkpoints', () => {
  const config: ModelConfig = {
    modelType: 'qwen3', vocabSize: 300, hiddenSize: 32, intermediateSize: 72, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8,
    rmsNormEps: 1e-6, ropeTheta: 1e6, maxPositionEmbeddings: 128, tieWordEmbeddings: false, bosTokenId: null, eosTokenId: 299,
  };

  it('writes a loadable, seeded checkpoint with the intended statistics', async () => {
    for (const dtype of ['F32', 'BF16'] as const) {
      const dir = join(tmp, `random-${dtype}`);
      writeRandomModel(dir, config, 7, dtype);
      expect(loadModelConfig(dir)).toEqual(config);
      const ckpt = Checkpoint.open(dir);
      try {
        expect(ckpt.info('lm_head.weight').dtype).toBe(dtype);
        const embed = ckpt.readF32('model.embed_tokens.weight');
        const mean = embed.reduce((a, b) => a + b, 0) / embed.length;
        const std = Math.sqrt(embed.reduce((a, b) => a + (b - mean) ** 2, 0) / embed.length);
        expect(Math.abs(mean)).toBeLessThan(0.002);
        expect(std).toBeGreaterThan(0.018);
        expect(std).toBeLessThan(0.022);
        const norm = ckpt.readF32('model.layers.1.input_layernorm.weight');
        const normMean = norm.reduce((a, b) => a + b, 0) / norm.length;
        expect(Math.abs(normMean - 1)).toBeLessThan(0.1);
        expect(new Set(norm).size).toBeGreaterThan(norm.length / 2);
        for (const g of [gpu, splitGpu]) await checkLoaded(g, dir, 'bf16');
        await checkLoaded(gpu, dir, 'f32');
      } finally {
        ckpt.close();
      }
    }
    // The same seed gives the same bytes; the BF16 file holds the F32 values rounded.
    writeRandomModel(join(tmp, 'again'), config, 7, 'F32');
    expect(readFileSync(join(tmp, 'again', 'model.safetensors')).equals(readFileSync(join(tmp, 'random-F32', 'model.safetensors')))).toBe(true);
    const f32 = Checkpoint.open(join(tmp, 'random-F32'));
    const bf16 = Checkpoint.open(join(tmp, 'random-BF16'));
    const name = 'model.layers.0.mlp.up_proj.weight';
    expect(new Uint16Array(bf16.readBytes(name).buffer)).toEqual(Uint16Array.from(f32.readF32(name), f32ToBf16));
    f32.close();
    bf16.close();
  });
});

describe('checkpoint problems', () => {
  const fixture = join(FIXTURES, 'tiny-tied', 'model');
  const config = loadModelConfig(fixture);

  /** The fixture's tensors, changed by `edit`, written to a new checkpoint; returns the load error. */
  function loadError(label: string, edit: (tensors: TensorToWrite[]) => TensorToWrite[]): string {
    const src = Checkpoint.open(fixture);
    const tensors = [...src.tensors.values()].map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape, data: src.readF32(t.name) }));
    src.close();
    const dir = join(tmp, label);
    mkdirSync(dir, { recursive: true });
    writeSafetensors(join(dir, 'model.safetensors'), edit(tensors));
    const ckpt = Checkpoint.open(dir);
    try {
      loadModelWeights(gpu, ckpt, config, 'bf16');
    } catch (e) {
      expect(e).toBeInstanceOf(UserError);
      expect((e as Error).message.startsWith(`${dir}: `)).toBe(true);
      return (e as Error).message;
    } finally {
      ckpt.close();
    }
    throw new Error('expected a UserError');
  }

  it('names a missing tensor', () => {
    expect(loadError('missing', (ts) => ts.filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight')))
      .toMatch(/tensor model.layers.1.mlp.up_proj.weight is missing \(expected shape \[160,64\]/);
  });

  it('names a tensor of the wrong shape', () => {
    expect(loadError('shape', (ts) => ts.map((t) => (t.name === 'model.layers.0.self_attn.k_proj.weight' ? { ...t, shape: [64, 32] } : t))))
      .toMatch(/tensor model.layers.0.self_attn.k_proj.weight has shape \[64,32\], config.json implies \[32,64\]/);
  });

  it('names an unexpected extra tensor', () => {
    expect(loadError('extra', (ts) => [...ts, { name: 'model.layers.2.mlp.up_proj.weight', dtype: 'F32', shape: [2], data: new Float32Array(2) }]))
      .toMatch(/unexpected tensor model.layers.2.mlp.up_proj.weight/);
  });

  it('names a non-finite value and frees what was uploaded', () => {
    const before = gpu.liveBytes;
    expect(loadError('nan', (ts) => ts.map((t) => {
      if (t.name !== 'model.layers.1.self_attn.o_proj.weight') return t;
      const data = Float32Array.from(t.data as Float32Array);
      data[100] = Number.POSITIVE_INFINITY;
      return { ...t, data };
    }))).toMatch(/tensor model.layers.1.self_attn.o_proj.weight has a non-finite value \(Infinity\) at element 100/);
    expect(gpu.liveBytes).toBe(before);
  });

  it('refuses integer tensors', () => {
    expect(loadError('int', (ts) => ts.map((t) => (t.name === 'model.norm.weight' ? { ...t, dtype: 'I32', data: new Int32Array(64) } : t))))
      .toMatch(/tensor model.norm.weight has dtype I32, expected a float type/);
  });
});
