// A merged Hugging Face folder, as LLaMA-Factory's export writes it: sharded safetensors (with
// model.safetensors.index.json when there is more than one shard), config and tokenizer files copied.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { f32ArrayToBf16, f32ToF16 } from '../gpu/dtype.js';
import { SafetensorsStreamWriter, type Checkpoint, type TensorSpec } from '../model/safetensors.js';
import type { SourceTensor } from './export.js';

const COPIED_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt', 'chat_template.jinja'];

type OutDType = 'F32' | 'BF16' | 'F16';

function encode(values: Float32Array, dtype: OutDType): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (dtype === 'BF16') return new Uint8Array(f32ArrayToBf16(values).buffer);
  const half = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) half[i] = f32ToF16(values[i]!);
  return new Uint8Array(half.buffer);
}

export interface MergedExportOptions {
  modelDir: string;
  /** The base checkpoint: each tensor keeps its float dtype. */
  ckpt: Checkpoint;
  sources: SourceTensor[];
  outDir: string;
  maxShardBytes: number;
  onProgress?: (done: number, total: number) => void;
}

/** Write the merged folder; returns the files written. */
export async function exportMergedSafetensors(o: MergedExportOptions): Promise<string[]> {
  const specs = o.sources.map((s) => {
    const dtype = o.ckpt.tensors.get(s.name)!.dtype;
    return { name: s.name, dtype: (dtype === 'BF16' || dtype === 'F16' ? dtype : 'F32') as OutDType, shape: s.shape };
  });
  const bytesOf = (t: TensorSpec) => t.shape.reduce((a, b) => a * b, 1) * (t.dtype === 'F32' ? 4 : 2);
  const shards: number[][] = [[]];
  let shardBytes = 0;
  specs.forEach((t, i) => {
    if (shardBytes > 0 && shardBytes + bytesOf(t) > o.maxShardBytes) {
      shards.push([]);
      shardBytes = 0;
    }
    shards.at(-1)!.push(i);
    shardBytes += bytesOf(t);
  });
  const total = specs.reduce((n, t) => n + bytesOf(t), 0);
  const names = shards.length === 1 ? ['model.safetensors'] : shards.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`);
  const written: string[] = [];
  const weightMap: Record<string, string> = {};
  let done = 0;
  for (let s = 0; s < shards.length; s++) {
    const file = path.join(o.outDir, names[s]!);
    const writer = new SafetensorsStreamWriter(file, shards[s]!.map((i) => specs[i]!), { format: 'pt' });
    try {
      for (const i of shards[s]!) {
        writer.write(encode(await o.sources[i]!.read(), specs[i]!.dtype));
        weightMap[specs[i]!.name] = names[s]!;
        done += bytesOf(specs[i]!);
        o.onProgress?.(done, total);
      }
      writer.finish();
    } catch (e) {
      writer.abort();
      throw e;
    }
    written.push(file);
  }
  if (shards.length > 1) {
    const index = path.join(o.outDir, 'model.safetensors.index.json');
    fs.writeFileSync(index, JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
    written.push(index);
  }
  for (const f of COPIED_FILES) {
    const src = path.join(o.modelDir, f);
    if (fs.existsSync(src)) {
      // Copy the bytes, not the mode: model folders are often read-only.
      fs.writeFileSync(path.join(o.outDir, f), fs.readFileSync(src));
      written.push(path.join(o.outDir, f));
    }
  }
  return written;
}
