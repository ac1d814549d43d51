// Benchmark models: the released Qwen3 shapes plus a tiny one for software Vulkan, with seeded random weights
// (no checkpoint file; values from src/model/random-weights.ts): speed does not depend on the values. The same
// seeded description gives the GPU weights (made matrix by matrix straight into GPU buffers) and host arrays for
// the tfjs peer, so both sides can be checked to compute the same step.
import type { Gpu } from '../src/gpu/device.js';
import { packBf16 } from '../src/gpu/dtype.js';
import { uploadMatrix, type GpuMatrix, type WeightDType } from '../src/gpu/matrix.js';
import { QWEN3_SIZES, TINY_QWEN3, type ModelConfig } from '../src/model/config.js';
import type { ModelWeights } from '../src/model/weights.js';
import { PROJECTIONS } from '../src/model/family.js';
import { buildModel, peftTensorName, projectionDims, type ModelOf } from '../src/model/families.js';
import { seededRandom } from '../src/random.js';
import { fillRandom } from '../src/model/random-weights.js';
import { UserError } from '../src/errors.js';

export const BENCH_SIZES: Record<string, ModelConfig> = { tiny: TINY_QWEN3, ...QWEN3_SIZES };

export function benchConfig(size: string): ModelConfig {
  const c = BENCH_SIZES[size];
  if (!c) throw new UserError(`--size: unknown size '${size}' (use ${Object.keys(BENCH_SIZES).join(', ')})`);
  return c;
}

/** Matrix values: uniform with the std of a 0.02 normal init. */
const MATRIX_BOUND = 0.02 * Math.sqrt(3);
/**
 * Random values are drawn once into a pool; each matrix reads it cyclically from its own seeded even offset:
 * drawing 8 billion values one by one in JS would take minutes and gain nothing for a speed benchmark. The
 * offset is even so that a bf16 matrix holds exactly the bf16 rounding of the f32 one.
 */
const POOL_VALUES = 1 << 20;

class ValuePool {
  private readonly f32: Float32Array;
  private readonly bf16: Uint32Array;
  private readonly next: () => number;

  constructor(seed: number) {
    const rand = seededRandom(seed);
    this.f32 = new Float32Array(POOL_VALUES);
    fillRandom(this.f32, rand, { shape: 'uniform', mean: 0, halfWidth: MATRIX_BOUND });
    this.bf16 = packBf16(this.f32);
    this.next = seededRandom(seed ^ 0x5bd1e995);
  }

  /** A new matrix's reader: elements [start, start + count) in the layout of `dtype` (bf16: start and count even). */
  matrix(): (start: number, count: number, dtype: WeightDType) => Float32Array | Uint32Array {
    const offset = 2 * Math.floor(this.next() * (POOL_VALUES / 2));
    return (start, count, dtype) => {
      const per = dtype === 'bf16' ? 2 : 1;
      const src = dtype === 'bf16' ? this.bf16 : this.f32;
      const out = dtype === 'bf16' ? new Uint32Array(count / per) : new Float32Array(count);
      let at = ((offset + start) % POOL_VALUES) / per;
      for (let done = 0; done < out.length; ) {
        const n = Math.min(out.length - done, src.length - at);
        out.set(src.subarray(at, at + n), done);
        done += n;
        at = 0;
      }
      return out;
    };
  }
}

type MatrixReader = ReturnType<ValuePool['matrix']>;

/** Walk the seeded model in its tensor table's order, handing each matrix its reader and each vector its values. */
function seededModel<M, V>(
  c: ModelConfig,
  seed: number,
  matrix: (rows: number, cols: number, read: MatrixReader, label: string) => M,
  vector: (values: Float32Array, label: string) => V,
): ModelOf<M, V> {
  const pool = new ValuePool(seed);
  const vectorRand = seededRandom(seed + 1);
  return buildModel(
    c,
    (t) => matrix(t.shape[0]!, t.shape[1]!, pool.matrix(), t.hf),
    // Norm weights near 1, as trained models have them; biases near 0.
    (t) => {
      const values = new Float32Array(t.shape[0]!);
      fillRandom(values, vectorRand, { shape: 'uniform', mean: t.kind === 'bias' ? 0 : 1, halfWidth: 0.1 });
      return vector(values, t.hf);
    },
  );
}

/** Seeded random Qwen3 weights of `config`'s shape on the GPU, matrices in `dtype`, uploaded part by part. */
export function randomQwen3Weights(gpu: Gpu, config: ModelConfig, dtype: WeightDType, seed: number): ModelWeights {
  return seededModel(
    config,
    seed,
    (rows, cols, read, label): GpuMatrix => uploadMatrix(gpu, rows, cols, dtype, (start, count) => read(start * cols, count * cols, dtype), label),
    (values, label) => gpu.upload(values, label),
  );
}

/** The same seeded weights as f32 host arrays (row-major matrices; lmHead is embed when tied). */
export type HostQwen3Weights = ModelOf<Float32Array, Float32Array>;

export function randomQwen3HostWeights(config: ModelConfig, seed: number): HostQwen3Weights {
  return seededModel(config, seed, (rows, cols, read) => read(0, rows * cols, 'f32') as Float32Array, (values) => values);
}

/**
 * Seeded LoRA factors by PEFT name (as readLoraTensors / writeLoraTensors hold them). Every A [r, in] first, as
 * initLora draws them from the same seed (uniform, bound 1/sqrt(in)), then every B [out, r], uniform with bound
 * `bBound`: 0 is PEFT's start; non-zero makes the adapter's path count in the loss and in A's gradient.
 */
export function randomLoraValues(c: ModelConfig, rank: number, seed: number, bBound: number): Map<string, Float32Array> {
  const rand = seededRandom(seed);
  const out = new Map<string, Float32Array>();
  for (const factor of ['A', 'B'] as const) {
    for (let l = 0; l < c.numLayers; l++) {
      for (const p of PROJECTIONS) {
        const [inDim, outDim] = projectionDims(c, p);
        const [count, bound] = factor === 'A' ? [rank * inDim, 1 / Math.sqrt(inDim)] : [outDim * rank, bBound];
        out.set(peftTensorName(c, l, p, factor), Float32Array.from({ length: count }, () => (rand() * 2 - 1) * bound));
      }
    }
  }
  return out;
}

/** Uniform random token ids in [0, vocab). */
export function randomTokens(count: number, vocab: number, seed: number): Uint32Array {
  const rand = seededRandom(seed);
  const ids = new Uint32Array(count);
  for (let i = 0; i < count; i++) ids[i] = Math.floor(rand() * vocab);
  return ids;
}
