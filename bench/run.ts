// `npm run bench -- ...`: the training benchmark (default), --kernels, --peer tfjs, or --table; prints the
// result as JSON and, with --out, adds it to a result file.
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { UserError } from '../src/errors.js';
import { benchmarkKernels, kernelDefaults } from './kernels.js';
import { benchConfig } from './model.js';
import { H100_LIMITS, planStep } from './plan.js';
import { appendRuns, importPeerLines, renderTables, writeTablesInto, type RunRecord } from './results.js';
import { benchmarkTraining, defaultSeq, TRAIN_DEFAULTS, type StepShape } from './train.js';

const USAGE = `usage: npm run bench -- [options]
  --size tiny|0.6B|1.7B|4B|8B   model shape, random weights (default 0.6B)
  --batch N --seq N --rank N     batch rows, tokens per row (2048; tiny: 64), LoRA rank (8)
  --dtype bf16|f32               frozen weight format (bf16)
  --no-recompute                 keep every layer's activations instead of recomputing them
  --f16                          stage matmul tiles in f16 where the adapter has shader-f16 (f32 accumulation)
  --warmup N --steps N           untimed and timed optimizer steps (2, 8)
  --plan                         count one step's dispatches and planned peak memory without running it (no GPU):
                                 --max-binding BYTES --memory BYTES (default an H100's: 2147483644, 80e9)
  --kernels                      kernel benchmark instead: --tokens N --square N --attn-seq N --reps N
                                 (--variants: also every tile variant at the q_proj shape)
  --peer tfjs                    the same LoRA step in TensorFlow.js on its WebGPU backend
  --out FILE|DIR/                add the result to a results file (a folder: <date>-<gpu>.json in it)
  --import FILE                  with --out: add the PyTorch peer's JSON lines (peft_baseline.py output)
  --table [--readme FILE]        print the tables of bench/results/*.json (--results DIR), or write them into FILE`;

function int(v: string | undefined, name: string, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UserError(`--${name} must be a non-negative integer, got '${v}'`);
  return n;
}

async function main(): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      size: { type: 'string', default: '0.6B' },
      batch: { type: 'string' }, seq: { type: 'string' }, rank: { type: 'string' },
      dtype: { type: 'string', default: TRAIN_DEFAULTS.dtype },
      'no-recompute': { type: 'boolean', default: false },
      f16: { type: 'boolean', default: false },
      warmup: { type: 'string' }, steps: { type: 'string' },
      kernels: { type: 'boolean', default: false }, variants: { type: 'boolean', default: false },
      plan: { type: 'boolean', default: false }, 'max-binding': { type: 'string' }, memory: { type: 'string' },
      tokens: { type: 'string' }, square: { type: 'string' }, 'attn-seq': { type: 'string' }, reps: { type: 'string' },
      peer: { type: 'string' },
      out: { type: 'string' }, import: { type: 'string' },
      table: { type: 'boolean', default: false }, readme: { type: 'string' }, results: { type: 'string', default: 'bench/results' },
      help: { type: 'boolean', default: false },
    },
  });
  if (a.help) {
    console.log(USAGE);
    return;
  }
  if (a.table) {
    const tables = renderTables(a.results!);
    if (a.readme) writeTablesInto(a.readme, tables);
    else console.log(tables);
    return;
  }
  if (a.import) {
    if (!a.out) throw new UserError('--import needs --out');
    const file = appendRuns(a.out, importPeerLines(fs.readFileSync(a.import, 'utf8'), a.import));
    console.error(`added to ${file}`);
    return;
  }
  const size = a.size!;
  benchConfig(size);
  if (a.dtype !== 'bf16' && a.dtype !== 'f32') throw new UserError(`--dtype must be bf16 or f32, got '${a.dtype}'`);
  // The step every mode but --kernels measures or plans, and the run lengths of the timed ones.
  const shape: StepShape = {
    size,
    batch: int(a.batch, 'batch', TRAIN_DEFAULTS.batch),
    seq: int(a.seq, 'seq', defaultSeq(size)),
    rank: int(a.rank, 'rank', TRAIN_DEFAULTS.rank),
    recompute: !a['no-recompute'],
    dtype: a.dtype,
  };
  const runLength = () => ({
    warmup: int(a.warmup, 'warmup', TRAIN_DEFAULTS.warmup),
    steps: Math.max(1, int(a.steps, 'steps', TRAIN_DEFAULTS.steps)),
  });
  if (a.plan) {
    const memory = a.memory === undefined ? H100_LIMITS.memoryBytes : Number(a.memory);
    if (!(memory > 0)) throw new UserError(`--memory must be a positive number of bytes, got '${a.memory}'`);
    console.log(JSON.stringify(planStep({
      ...shape,
      maxBindingBytes: int(a['max-binding'], 'max-binding', H100_LIMITS.maxBindingBytes),
      memoryBytes: memory,
    }), null, 2));
    return;
  }
  let result: RunRecord;
  if (a.kernels) {
    const d = kernelDefaults(size);
    result = { ...(await benchmarkKernels({
      size,
      tokens: int(a.tokens, 'tokens', d.tokens),
      square: int(a.square, 'square', d.square),
      attnSeq: int(a['attn-seq'], 'attn-seq', d.attnSeq),
      reps: Math.max(1, int(a.reps, 'reps', d.reps)),
      variants: a.variants,
    })) };
  } else if (a.peer !== undefined) {
    if (a.peer !== 'tfjs') throw new UserError(`--peer: only 'tfjs' runs here (the PyTorch peer is shared/bench/peft_baseline.py), got '${a.peer}'`);
    const { benchmarkTfjs } = await import('./tfjs-peer.js');
    result = { ...(await benchmarkTfjs({ size, batch: shape.batch, seq: shape.seq, rank: shape.rank, ...runLength() })) };
  } else {
    result = { ...(await benchmarkTraining({ ...shape, f16: a.f16, ...runLength() })) };
  }
  console.log(JSON.stringify(result, null, 2));
  if (a.out) console.error(`added to ${appendRuns(a.out, [result])}`);
}

main().then(
  // tfjs keeps its WebGPU device (and so the process) alive.
  () => process.exit(0),
  (e: unknown) => {
    if (e instanceof UserError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`error: ${(e as Error).message}`);
      process.exit(1);
    }
    console.error(e);
    process.exit(1);
  },
);
