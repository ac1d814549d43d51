// Our quantizers against ggml's own (libggml-base from node-llama-cpp's llama.cpp build, via koffi):
// identical bytes, and the same reconstruction through ggml's dequantize_row_*; and the same bytes in parallel.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GgmlType, ggmlRowBytes, ggmlTypeName } from '../src/gpu/ggml-types.js';
import { writeGgufTo } from '../src/gguf/gguf-encoder.js';
import { quantizeRows } from '../src/gguf/quantize.js';
import { modelGguf, type SlabQuantizer } from '../src/gguf/model-gguf.js';
import { f16ToF32, bf16ToF32 } from '../src/gpu/dtype.js';
import { loadModelConfig } from '../src/model/config.js';
import { modelTensorShapes } from '../src/model/families.js';
import { FIXTURES, rng } from './helpers.js';
import { loadGgml } from './gguf-oracles.js';

const REPO = join(import.meta.dirname, '..');

/** Rows with what real weights and edge cases look like: gaussian-ish, outliers, all-zero and constant blocks. */
function testRows(rows: number, rowLength: number, seed: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(rows * rowLength);
  for (let i = 0; i < x.length; i++) {
    const g = (r() + r() + r() + r() - 2) * 0.05;
    x[i] = r() < 0.01 ? g * 20 : g;
  }
  // One all-zero 256-block, one constant 32-block, one all-positive 32-block.
  if (x.length >= 1024) {
    x.fill(0, 256, 512);
    x.fill(0.0123, 512, 544);
    for (let i = 544; i < 576; i++) x[i] = Math.abs(x[i]!) + 0.01;
  }
  return x;
}

function sqError(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return s;
}

describe('quantizers match ggml', () => {
  const ggml = loadGgml();
  const cases: [GgmlType, number][] = [
    [GgmlType.F32, 50], [GgmlType.F16, 50], [GgmlType.BF16, 70],
    [GgmlType.Q8_0, 96], [GgmlType.Q4_0, 96], [GgmlType.Q5_0, 64], [GgmlType.Q5_1, 160],
    [GgmlType.Q4_K, 512], [GgmlType.Q5_K, 768], [GgmlType.Q6_K, 256],
  ];
  for (const [type, rowLength] of cases) {
    it(`${ggmlTypeName(type)} on rows of ${rowLength}: same bytes as ggml_quantize_chunk`, () => {
      for (const seed of [1, 2, 3]) {
        const x = testRows(Math.ceil(2048 / rowLength) + 3, rowLength, seed * 100 + type);
        const bytes = ggmlRowBytes(type, rowLength) * (x.length / rowLength);
        const ours = quantizeRows(type, x, rowLength);
        const theirs = ggml.quantize(type, x, rowLength, bytes);
        let differing = 0;
        for (let i = 0; i < bytes; i++) if (ours[i] !== theirs[i]) differing++;
        if (differing > 0) {
          // Allowed only where our reconstruction is at least as good as ggml's.
          const e1 = sqError(ggml.dequantize(type, ours, x.length), x);
          const e2 = sqError(ggml.dequantize(type, theirs, x.length), x);
          expect(e1).toBeLessThanOrEqual(e2);
        }
        expect(differing).toBe(0);
      }
    });
  }

  it('reconstruction error of each type is what its bit width implies', () => {
    const x = testRows(8, 256, 7);
    const rms = Math.sqrt(sqError(x, new Float32Array(x.length)) / x.length);
    const relErr = (type: GgmlType): number => Math.sqrt(sqError(ggml.dequantize(type, quantizeRows(type, x, 256), x.length), x) / x.length) / rms;
    expect(relErr(GgmlType.Q8_0)).toBeLessThan(0.02);
    expect(relErr(GgmlType.Q6_K)).toBeLessThan(relErr(GgmlType.Q5_K));
    expect(relErr(GgmlType.Q5_K)).toBeLessThan(relErr(GgmlType.Q4_K));
    expect(relErr(GgmlType.Q4_K)).toBeLessThan(0.15);
  });
});

describe('Q8_0 and K-quant blocks in WebAssembly', () => {
  it('kquant-wasm.ts is what kquant.wat assembles to', () => {
    // Exits non-zero (and execFileSync throws) when the generated module is stale.
    expect(() => execFileSync(process.execPath, [join(REPO, 'scripts', 'build-kquant-wasm.mjs'), '--check'], { stdio: 'pipe' })).not.toThrow();
  });

  it('Q8_0, Q4_K, Q5_K and Q6_K match ggml on many blocks of varied scale and shape', () => {
    const ggml = loadGgml();
    const r = rng(11);
    const rowLength = 256;
    const x = new Float32Array(rowLength * 96);
    for (let b = 0; b < 96; b++) {
      // Magnitudes from 1e-6 to 10, some blocks one-signed, some with a few large outliers.
      const size = 10 ** (r() * 7 - 6);
      const shift = b % 5 === 0 ? size : 0;
      for (let i = 0; i < rowLength; i++) {
        const v = (r() - 0.5) * size + shift;
        x[b * rowLength + i] = r() < 0.02 ? v * 30 : v;
      }
      // The searches run four groups per SIMD lane set: groups of zeros, constant groups (max == min) and tiny
      // groups beside ordinary ones in the same super-block.
      const group = b * rowLength + 16 * Math.floor(r() * 16);
      if (b % 3 === 1) x.fill(0, group, group + 16);
      if (b % 3 === 2) x.fill(-0.25 * size, group - (group % 32), group - (group % 32) + 32);
      if (b % 7 === 3) for (let i = 0; i < 32; i++) x[group - (group % 32) + i] *= 1e-12;
    }
    for (const type of [GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K]) {
      const bytes = ggmlRowBytes(type, rowLength) * 96;
      expect(Buffer.compare(quantizeRows(type, x, rowLength), ggml.quantize(type, x, rowLength, bytes))).toBe(0);
    }
  });
});

describe('float conversions', () => {
  it('F16 and BF16 round to nearest even, as ggml does, on the edge cases', () => {
    const x = new Float32Array([0, -0, 1, -2.5, 65504, 65520, 70000, 1e-8, 6.1e-5, 3.14159265, 1 + 2 ** -11, 1 + 3 * 2 ** -11, Infinity, -Infinity]);
    const ggml = loadGgml();
    for (const type of [GgmlType.F16, GgmlType.BF16]) {
      expect(quantizeRows(type, x, x.length)).toEqual(ggml.quantize(type, x, x.length, 2 * x.length));
    }
    const h = new Uint16Array(quantizeRows(GgmlType.F16, x, x.length).buffer);
    expect(Array.from(h.subarray(5, 12), f16ToF32)).toEqual([Infinity, Infinity, 0, 1023 * 2 ** -24, 3.140625, 1, 1 + 2 * 2 ** -10]);
    const b = new Uint16Array(quantizeRows(GgmlType.BF16, x, x.length).buffer);
    expect(bf16ToF32(b[9]!)).toBe(3.140625);
  });

  it('rejects rows that are not whole blocks', () => {
    expect(() => quantizeRows(GgmlType.Q4_K, new Float32Array(128), 128)).toThrow(/multiple of 256/);
    expect(() => quantizeRows(GgmlType.Q8_0, new Float32Array(100), 50)).toThrow(/multiple of 32/);
  });
});

describe('parallel quantization', () => {
  it('the exporter writes a SlabQuantizer\'s slabs in order, however they finish', async () => {
    const config = { ...loadModelConfig(join(FIXTURES, 'tiny-tied', 'model')), hiddenSize: 256, intermediateSize: 512, numHeads: 4, numKvHeads: 2, headDim: 64 };
    const tensors = [...modelTensorShapes(config)].map(([name, shape], i) => ({ name, shape, read: () => testRows(shape.reduce((a, b) => a * b, 1) / shape.at(-1)!, shape.at(-1)!, i) }));
    const write = async (quantizer?: SlabQuantizer): Promise<Uint8Array> => {
      const parts: Uint8Array[] = [];
      await writeGgufTo({ write: async (b) => void parts.push(b.slice()) }, modelGguf({ config, tokenizer: [], tensors, quantization: 'q4_k_m', quantizer }));
      return Buffer.concat(parts);
    };
    const r = rng(5);
    let calls = 0;
    // Later slabs often finish first.
    const shuffling: SlabQuantizer = {
      inFlight: 5,
      slabElements: 1024,
      quantize: async (type, slab, rowLength) => {
        calls++;
        await new Promise((done) => setTimeout(done, r() * 5));
        return quantizeRows(type, slab, rowLength);
      },
    };
    const theirs = await write(shuffling);
    expect(calls).toBeGreaterThan(tensors.length);
    expect(Buffer.compare(await write(), theirs)).toBe(0);
  });

  it('QuantizePool (compiled, on worker threads) gives quantizeRows\' bytes in order and passes errors on', async () => {
    const outDir = mkdtempSync(join(tmpdir(), 'loraforge-pool-'));
    try {
      // Node runs the worker only as JavaScript.
      execFileSync(process.execPath, [
        join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '--outDir', outDir, '--rootDir', join(REPO, 'src'),
        '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck', '--noCheck', '--types', 'node',
        join(REPO, 'src', 'gguf', 'quantize-pool.ts'), join(REPO, 'src', 'gguf', 'quantize-worker.ts'),
      ]);
      writeFileSync(join(outDir, 'package.json'), '{"type":"module"}');
      const { QuantizePool } = (await import(join(outDir, 'gguf', 'quantize-pool.js'))) as typeof import('../src/gguf/quantize-pool.js');
      const pool = new QuantizePool(3);
      try {
        expect(pool.inFlight).toBe(6);
        const jobs = [GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q5_K, GgmlType.Q8_0, GgmlType.F16, GgmlType.Q4_K, GgmlType.Q6_K].map((type, i) => {
          const slab = testRows(4 + i, 512, 40 + i);
          return { type, slab, bytes: pool.quantize(type, slab, 512) };
        });
        for (const { type, slab, bytes } of jobs) expect(await bytes).toEqual(quantizeRows(type, slab, 512));
        await expect(pool.quantize(GgmlType.Q4_K, new Float32Array(128), 128)).rejects.toThrow(/multiple of 256/);
        // A failed slab leaves the pool working.
        const slab = testRows(2, 256, 9);
        expect(await pool.quantize(GgmlType.Q5_K, slab, 256)).toEqual(quantizeRows(GgmlType.Q5_K, slab, 256));
      } finally {
        await pool.close();
      }
      await expect(pool.quantize(GgmlType.Q8_0, new Float32Array(32), 32)).rejects.toThrow(/closed/);
    } finally {
      rmSync(outDir, { recursive: true, force: true });
    }
  });
});
