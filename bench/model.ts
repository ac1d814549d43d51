// Benchmark models: the released Qwen3 shapes plus a tiny one for software Vulkan, with seeded random weights
// made straight on the GPU (no checkpoint file): speed does not depend on the values.
import type { Gpu } from '../src/gpu/device.js';
import { packBf16 } from '../src/gpu/dtype.js';
import { uploadMatrix, type GpuMatrix, type WeightDType } from '../src/gpu/matrix.js';
import { QWEN3_SIZES, type Qwen3Config } from '../src/model/config.js';
import type { LayerWeights, Qwen3Weights } from '../src/model/weights.js';
import { seededRandom } from '../src/random.js';
import { UserError } from '../src/errors.js';

/** The shape of shared/fixtures/qwen3/tiny-tied: a few seconds per step on lavapipe. */
export const TINY_QWEN3: Qwen3Config = {
  vocabSize: 512,
  hiddenSize: 64,
  intermediateSize: 160,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  rmsNormEps: 1e-6,
  ropeTheta: 1e6,
  maxPositionEmbeddings: 256,
  tieWordEmbeddings: true,
  bosTokenId: null,
  eosTokenId: null,
};

export const BENCH_SIZES: Record<string, Qwen3Config> = { tiny: TINY_QWEN3, ...QWEN3_SIZES };

export function benchConfig(size: string): Qwen3Config {
  const c = BENCH_SIZES[size];
  if (!c) throw new UserError(`--size: unknown size '${size}' (use ${Object.keys(BENCH_SIZES).join(', ')})`);
  return c;
}

/** Matrix values: uniform with the std of a 0.02 normal init. */
const MATRIX_BOUND = 0.02 * Math.sqrt(3);
/**
 * Random values are drawn once into a pool and tiled, from a per-matrix seeded offset, over every matrix:
 * drawing 8 billion values one by one in JS would take minutes and gain nothing for a speed benchmark.
 */
const POOL_VALUES = 1 << 20;

class ValuePool {
  readonly f32: Float32Array;
  readonly bf16: Uint32Array;
  private next: () => number;

  constructor(seed: number) {
    const rand = seededRandom(seed);
    this.f32 = new Float32Array(POOL_VALUES);
    for (let i = 0; i < POOL_VALUES; i++) this.f32[i] = (rand() * 2 - 1) * MATRIX_BOUND;
    this.bf16 = packBf16(this.f32);
    this.next = seededRandom(seed ^ 0x5bd1e995);
  }

  /** `count` values in the layout of `dtype`, starting at a random place in the pool. */
  fill(count: number, dtype: WeightDType): ArrayBufferView {
    // bf16 pairs: start on an even value so each u32 word holds two pool values.
    const words = dtype === 'bf16' ? count / 2 : count;
    const src = dtype === 'bf16' ? this.bf16 : this.f32;
    const out = dtype === 'bf16' ? new Uint32Array(words) : new Float32Array(words);
    let at = Math.floor(this.next() * src.length);
    for (let done = 0; done < words; ) {
      const n = Math.min(words - done, src.length - at);
      out.set(src.subarray(at, at + n), done);
      done += n;
      at = 0;
    }
    return out;
  }
}

/** Seeded random Qwen3 weights of `config`'s shape on the GPU, matrices in `dtype`, uploaded part by part. */
export function randomQwen3Weights(gpu: Gpu, config: Qwen3Config, dtype: WeightDType, seed: number): Qwen3Weights {
  const pool = new ValuePool(seed);
  const normRand = seededRandom(seed + 1);
  const matrix = (rows: number, cols: number, label: string): GpuMatrix =>
    uploadMatrix(gpu, rows, cols, dtype, (_start, count) => pool.fill(count * cols, dtype), label);
  // Norm weights near 1, as trained models have them.
  const norm = (n: number, label: string): GPUBuffer => {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = 1 + (normRand() * 2 - 1) * 0.1;
    return gpu.upload(v, label);
  };
  const c = config;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const embed = matrix(c.vocabSize, c.hiddenSize, 'embed');
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    layers.push({
      inputNorm: norm(c.hiddenSize, `L${l}.input_norm`),
      postAttnNorm: norm(c.hiddenSize, `L${l}.post_norm`),
      qNorm: norm(c.headDim, `L${l}.q_norm`),
      kNorm: norm(c.headDim, `L${l}.k_norm`),
      q: matrix(qDim, c.hiddenSize, `L${l}.q`),
      k: matrix(kvDim, c.hiddenSize, `L${l}.k`),
      v: matrix(kvDim, c.hiddenSize, `L${l}.v`),
      o: matrix(c.hiddenSize, qDim, `L${l}.o`),
      gate: matrix(c.intermediateSize, c.hiddenSize, `L${l}.gate`),
      up: matrix(c.intermediateSize, c.hiddenSize, `L${l}.up`),
      down: matrix(c.hiddenSize, c.intermediateSize, `L${l}.down`),
    });
  }
  const finalNorm = norm(c.hiddenSize, 'final_norm');
  const lmHead = c.tieWordEmbeddings ? embed : matrix(c.vocabSize, c.hiddenSize, 'lm_head');
  return { embed, lmHead, finalNorm, layers };
}

/** Uniform random token ids in [0, vocab). */
export function randomTokens(count: number, vocab: number, seed: number): Uint32Array {
  const rand = seededRandom(seed);
  const ids = new Uint32Array(count);
  for (let i = 0; i < count; i++) ids[i] = Math.floor(rand() * vocab);
  return ids;
}
