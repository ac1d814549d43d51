// The one seeded random-weight generator: values for a model's tensors (by the family description's names, shapes
// and kinds) drawn from a distribution per tensor. The checkpoint writer (random-model.ts), the browser demo, the
// bench and the tests' reference model all draw through it; they differ only in the distributions they ask for
// and in how they consume the values (streamed to a file, in memory, a pool read cyclically). No Node API.
import { seededRandom } from '../random.js';
import { modelTensors, type ModelTensor } from './families.js';
import type { ModelConfig } from './family.js';

/** Normal by mean and standard deviation, or uniform on [mean - halfWidth, mean + halfWidth). */
export type Distribution = { shape: 'normal'; mean: number; std: number } | { shape: 'uniform'; mean: number; halfWidth: number };

/** The distribution of each tensor of a model. */
export type WeightInit = (t: ModelTensor) => Distribution;

/** A plain init: normal(0, 0.02) matrices, norm weights 1 ± 0.1 and biases 0 ± 0.1 (normal), as trained models roughly have them. */
export const NORMAL_INIT: WeightInit = (t) =>
  t.kind === 'matrix' ? { shape: 'normal', mean: 0, std: 0.02 } : { shape: 'normal', mean: t.kind === 'norm' ? 1 : 0, std: 0.1 };

/**
 * Fill `out` with values of `d` drawn from `next`. Normal values come by Box-Muller, two per pair of uniforms, so
 * a stream filled in chunks of even length gives the same values as one fill.
 */
export function fillRandom(out: Float32Array, next: () => number, d: Distribution): void {
  if (d.shape === 'uniform') {
    for (let i = 0; i < out.length; i++) out[i] = d.mean + (next() * 2 - 1) * d.halfWidth;
    return;
  }
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next())) * d.std;
    const angle = 2 * Math.PI * next();
    out[i] = d.mean + r * Math.cos(angle);
    if (i + 1 < out.length) out[i + 1] = d.mean + r * Math.sin(angle);
  }
}

/** The stream of the tensor at `index` of a model seeded with `seed`: each tensor's values depend on nothing else. */
export function tensorStream(seed: number, index: number): () => number {
  return seededRandom(Math.imul(seed, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b));
}

/** Every tensor of a (small) model with its seeded values, in checkpoint order. */
export function randomModelTensors(config: ModelConfig, seed: number, init: WeightInit = NORMAL_INIT): { tensor: ModelTensor; values: Float32Array }[] {
  return modelTensors(config).map((tensor, index) => {
    const values = new Float32Array(tensor.shape.reduce((a, b) => a * b, 1));
    fillRandom(values, tensorStream(seed, index), init(tensor));
    return { tensor, values };
  });
}
