// A seeded random checkpoint of any family and shape (config.json + model.safetensors), for benchmarks on the real
// sizes and for tests. Values are generated chunk by chunk straight into the file: a 0.6B model never exists
// whole in memory. Speed does not depend on the values, so a plain normal init is enough.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelConfigToJson, type ModelConfig } from './config.js';
import { SafetensorsStreamWriter } from './safetensors.js';
import { modelTensors } from './families.js';
import { seededRandom } from '../random.js';

const MATRIX_STD = 0.02;
/** Norm weights 1 ± this, biases 0 ± this. */
const VECTOR_STD = 0.1;
/** Values generated per chunk (4 MiB of f32). */
const CHUNK = 1 << 20;

/** Fill `out` with mean + std * N(0, 1) (Box-Muller, two values per pair of uniforms). */
function fillNormal(out: Float32Array, next: () => number, mean: number, std: number): void {
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next())) * std;
    const angle = 2 * Math.PI * next();
    out[i] = mean + r * Math.cos(angle);
    if (i + 1 < out.length) out[i + 1] = mean + r * Math.sin(angle);
  }
}

/** f32 values to bf16 bits, rounding to nearest even (values here are finite). */
function toBf16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** Write `dir/config.json` and `dir/model.safetensors` with seeded random weights in the family's HF layout. */
export function writeRandomModel(dir: string, config: ModelConfig, seed: number, dtype: 'F32' | 'BF16'): void {
  mkdirSync(dir, { recursive: true });
  const tensors = modelTensors(config);
  const writer = new SafetensorsStreamWriter(
    join(dir, 'model.safetensors'),
    tensors.map(({ hf: name, shape }) => ({ name, dtype, shape })),
    { format: 'pt' },
  );
  try {
    tensors.forEach(({ shape, kind }, index) => {
      // One generator per tensor so each tensor's values do not depend on the chunk size.
      const next = seededRandom(Math.imul(seed, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b));
      const total = shape.reduce((a, b) => a * b, 1);
      const chunk = new Float32Array(Math.min(CHUNK, total));
      for (let done = 0; done < total; done += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, total - done));
        fillNormal(part, next, kind === 'norm' ? 1 : 0, kind === 'matrix' ? MATRIX_STD : VECTOR_STD);
        writer.write(dtype === 'BF16' ? toBf16(part) : part);
      }
    });
  } catch (e) {
    writer.abort();
    throw e;
  }
  writer.finish();
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify({ ...modelConfigToJson(config), torch_dtype: dtype === 'BF16' ? 'bfloat16' : 'float32' }, null, 2)}\n`);
}
