// Independent checks for the GGUF tests: llama.cpp through node-llama-cpp (in a child process) and
// ggml's own quantizers and dequantizers from libggml-base (through koffi).
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Checkpoint } from '../src/model/safetensors.js';
import type { SourceTensor } from '../src/gguf/export.js';
import { GgmlType } from '../src/gpu/ggml-types.js';

const here = dirname(fileURLToPath(import.meta.url));
export { FIXTURES } from './helpers.js';

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'loraforge-gguf-'));
}

/** The fixture's model tensors as exporter sources. */
export function fixtureSources(file: string): SourceTensor[] {
  const ck = Checkpoint.open(file);
  return [...ck.tensors.values()].map((t) => ({ name: t.name, shape: t.shape, read: () => ck.readF32(t.name) }));
}

/** Run a child-process runner (a script beside this file) on a JSON request; its JSON result. */
async function runRunner<T>(script: string, request: object): Promise<T> {
  const dir = tempDir();
  try {
    const requestFile = join(dir, 'request.json');
    const resultFile = join(dir, 'result.json');
    writeFileSync(requestFile, JSON.stringify(request));
    await promisify(execFile)(process.execPath, [join(here, script), requestFile, resultFile], { maxBuffer: 1 << 26 });
    return JSON.parse(readFileSync(resultFile, 'utf8')) as T;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Next-token probabilities from llama.cpp for every prefix of each row: result[b][t][v]. */
export async function llamaProbabilities(o: { model: string; vocab: number; rows: number[][]; lora?: { path: string; scale: number } }): Promise<number[][][]> {
  return (await runRunner<{ rows: number[][][] }>('gguf-llama-runner.mjs', o)).rows;
}

/** llama.cpp's token ids for texts by the GGUF's stored tokenizer, and llama.cpp's Jinja engine rendering templates. */
export function llamaText(o: { model?: string; texts?: string[]; renders?: { template: string; context: object }[] }): Promise<{ ids: number[][]; rendered: string[]; chatTemplate: string | null }> {
  return runRunner('gguf-llama-text.mjs', o);
}

export function logSoftmax(logits: Float32Array, at: number, n: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[at + i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[at + i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = logits[at + i]! - lse;
  return out;
}

export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

// ---- ggml through koffi ----

interface Ggml {
  quantize(type: GgmlType, src: Float32Array, rowLength: number, bytes: number): Uint8Array;
  dequantize(type: GgmlType, bytes: Uint8Array, count: number): Float32Array;
}

let ggml: Ggml | undefined;

/** libggml-base.so of the prebuilt llama.cpp that node-llama-cpp ships. */
export function loadGgml(): Ggml {
  if (ggml) return ggml;
  const require = createRequire(import.meta.url);
  const koffi = require('koffi') as typeof import('koffi');
  const binDir = join(here, '..', 'node_modules', '@node-llama-cpp', 'linux-x64', 'bins', 'linux-x64');
  const lib = koffi.load(join(binDir, 'libggml-base.so'));
  // size_t ggml_quantize_chunk(type, const float *src, void *dst, int64_t start, int64_t nrows, int64_t n_per_row, const float *imatrix)
  const quantizeChunk = lib.func('size_t ggml_quantize_chunk(int type, const float *src, _Out_ uint8_t *dst, int64_t start, int64_t nrows, int64_t n_per_row, const float *imatrix)');
  const dequantizers: Partial<Record<GgmlType, (src: Uint8Array, dst: Float32Array, k: number) => void>> = {};
  for (const [type, name] of [
    [GgmlType.Q4_0, 'q4_0'], [GgmlType.Q5_0, 'q5_0'], [GgmlType.Q5_1, 'q5_1'], [GgmlType.Q8_0, 'q8_0'],
    [GgmlType.Q4_K, 'q4_K'], [GgmlType.Q5_K, 'q5_K'], [GgmlType.Q6_K, 'q6_K'],
  ] as const) {
    dequantizers[type] = lib.func(`void dequantize_row_${name}(const uint8_t *x, _Out_ float *y, int64_t k)`);
  }
  ggml = {
    quantize(type, src, rowLength, bytes) {
      const dst = new Uint8Array(bytes);
      const written = quantizeChunk(type, src, dst, 0, src.length / rowLength, rowLength, null) as number;
      if (written !== bytes) throw new Error(`ggml wrote ${written} bytes, expected ${bytes}`);
      return dst;
    },
    dequantize(type, bytes, count) {
      const out = new Float32Array(count);
      dequantizers[type]!(bytes, out, count);
      return out;
    },
  };
  return ggml;
}

/** llama.cpp's llama_model_quantize (as `llama-quantize in out ftype`), run in a child process. */
export async function llamaQuantize(input: string, output: string, fileType: number): Promise<void> {
  await promisify(execFile)(process.execPath, [join(here, 'gguf-llama-quantize.mjs'), input, output, String(fileType)], { maxBuffer: 1 << 26 });
}

/** Every tensor of a GGUF file (parsed by @huggingface/gguf): its ggml type and raw bytes. */
export async function readGgufTensors(path: string): Promise<Map<string, { type: number; ne: number[]; bytes: Uint8Array }>> {
  const { gguf } = await import('@huggingface/gguf');
  const parsed = await gguf(path, { allowLocalFile: true });
  const file = readFileSync(path);
  const infos = [...parsed.tensorInfos].sort((a, b) => Number(a.offset - b.offset));
  const out = new Map<string, { type: number; ne: number[]; bytes: Uint8Array }>();
  infos.forEach((t, i) => {
    const start = Number(parsed.tensorDataOffset + t.offset);
    const end = i + 1 < infos.length ? Number(parsed.tensorDataOffset + infos[i + 1]!.offset) : file.length;
    out.set(t.name, { type: Number(t.dtype), ne: t.shape.map(Number), bytes: file.subarray(start, end) });
  });
  return out;
}
