// A seeded random checkpoint of any family and shape (config.json + model.safetensors), for benchmarks on the real
// sizes and for tests. Values are generated chunk by chunk straight into the file: a 0.6B model never exists
// whole in memory (values from random-weights.ts). Speed does not depend on the values, so a plain normal init is
// enough.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { f32ArrayToBf16 } from '../gpu/dtype.js';
import { modelConfigToJson, type ModelConfig } from './config.js';
import { SafetensorsStreamWriter } from './safetensors.js';
import { modelTensors } from './families.js';
import { fillRandom, NORMAL_INIT, tensorStream } from './random-weights.js';

/** Values generated per chunk (4 MiB of f32; even, so chunked normals equal one fill). */
const CHUNK = 1 << 20;

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
    tensors.forEach((tensor, index) => {
      const { shape } = tensor;
      const next = tensorStream(seed, index);
      const distribution = NORMAL_INIT(tensor);
      const total = shape.reduce((a, b) => a * b, 1);
      const chunk = new Float32Array(Math.min(CHUNK, total));
      for (let done = 0; done < total; done += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, total - done));
        fillRandom(part, next, distribution);
        writer.write(dtype === 'BF16' ? f32ArrayToBf16(part) : part);
      }
    });
  } catch (e) {
    writer.abort();
    throw e;
  }
  writer.finish();
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify({ ...modelConfigToJson(config), torch_dtype: dtype === 'BF16' ? 'bfloat16' : 'float32' }, null, 2)}\n`);
}
