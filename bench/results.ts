// Result files (bench/results/<date>-<gpu>.json: every run made on one machine on one day) and the markdown
// tables rendered from them into bench/README.md.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../src/errors.js';

/** One run as stored: what a benchmark printed (train, kernels, a peer), possibly imported from the torch peer. */
export type RunRecord = Record<string, unknown> & { bench: string; impl: string };

export interface ResultFile {
  runs: RunRecord[];
}

interface DeviceLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  software?: boolean;
}

/** A file name for the machine: `2026-11-25-nvidia-h100-80gb-hbm3.json`. */
export function resultFileName(date: string, device: DeviceLike): string {
  const slug = adapterName(device).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'gpu';
  return `${date.slice(0, 10)}-${slug}.json`;
}

export function readResultFile(file: string): ResultFile {
  if (!fs.existsSync(file)) return { runs: [] };
  let j: unknown;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof j !== 'object' || j === null || !Array.isArray((j as ResultFile).runs)) throw new UserError(`${file}: expected an object with a "runs" array`);
  return j as ResultFile;
}

/** Add runs to a result file (created when missing); `out` may be a folder, then the file is named by date and GPU. */
export function appendRuns(out: string, runs: RunRecord[]): string {
  let file = out;
  if (out.endsWith('/') || (fs.existsSync(out) && fs.statSync(out).isDirectory())) {
    const first = runs.find((r) => r.device) ?? runs[0];
    file = path.join(out, resultFileName(String(first?.date ?? new Date().toISOString()), (first?.device ?? {}) as DeviceLike));
  }
  const data = readResultFile(file);
  data.runs.push(...runs);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}

/** The PyTorch peer's JSON lines (shared/bench/peft_baseline.py) as runs of the same shape as ours. */
export function importPeerLines(text: string, source: string): RunRecord[] {
  return text.split('\n').filter((l) => l.trim().startsWith('{')).map((line, i) => {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(line) as Record<string, unknown>;
    } catch (e) {
      throw new UserError(`${source}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    const { peer, grad_ckpt, ...rest } = j;
    // The peer prints no date; it ran just before its lines are imported.
    return { bench: 'train', impl: String(peer ?? 'peer'), recompute: !!grad_ckpt, date: new Date().toISOString(), ...rest };
  });
}

/** The adapter's name without the driver details that follow it ("llvmpipe: Mesa 25.0.7 (LLVM 15)"). */
function adapterName(d: DeviceLike): string {
  return (d.description || d.device || d.vendor || 'gpu').split(/[:(]/)[0]!.trim();
}

function deviceLabel(d: DeviceLike | undefined): string {
  if (!d) return 'unknown';
  return d.software ? `${adapterName(d)} (software Vulkan on the CPU)` : adapterName(d);
}

const fmt = (x: unknown, digits = 1) => (typeof x === 'number' ? x.toLocaleString('en-US', { maximumFractionDigits: digits }) : '—');

/** The full commit of a run, marked "(dirty)" when the tree differed from it (older runs wrote `<hash>-dirty`). */
function commitCell(r: RunRecord): string {
  if (typeof r.commit !== 'string') return '—';
  const m = /^(.*?)(-dirty)?$/.exec(r.commit)!;
  return r.dirty === true || m[2] ? `${m[1]} (dirty)` : m[1]!;
}

/** Markdown tables of every result file in `dir`: training throughput, then kernel speeds. */
export function renderTables(dir: string): string {
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort() : [];
  const train: string[] = [];
  const kernels: string[] = [];
  for (const f of files) {
    const { runs } = readResultFile(path.join(dir, f));
    // Imported peer runs carry no adapter info: they ran on the machine of the file's other runs.
    const fileDevice = runs.find((r) => r.device)?.device as DeviceLike | undefined;
    for (const r of runs) {
      const device = deviceLabel((r.device as DeviceLike | undefined) ?? fileDevice);
      const date = typeof r.date === 'string' ? r.date.slice(0, 10) : '—';
      const commit = commitCell(r);
      if (r.bench === 'train') {
        train.push(`| ${device} | ${r.impl} | ${r.size} | ${r.batch}×${r.seq} | ${r.rank} | ${r.dtype} | ${r.recompute ? 'yes' : 'no'} | ${fmt(r.step_s, 4)} | ${fmt(r.tokens_per_s)} | ${fmt(r.peak_gib, 3)} | ${date} | ${commit} | \`${f}\` |`);
      } else if (r.bench === 'kernels') {
        for (const m of (r.matmul as Record<string, number | string>[]) ?? []) {
          kernels.push(`| ${device} | matmul ${m.name} | ${m.dtype} | ${m.M}×${m.N}×${m.K} | ${fmt(m.ms, 4)} | ${fmt(m.tflops, 4)} | ${date} | ${commit} |`);
        }
        for (const a of (r.attention as Record<string, number | string>[]) ?? []) {
          kernels.push(`| ${device} | attention ${a.pass} | f32 | T ${a.T}, ${a.heads}/${a.kv_heads} heads, d ${a.head_dim} | ${fmt(a.ms, 4)} | ${fmt(a.tflops, 4)} | ${date} | ${commit} |`);
        }
      }
    }
  }
  const out = [
    '### LoRA training step (all seven projections)',
    '',
    '| device | implementation | size | batch×seq | rank | weights | recompute | step s | tokens/s | peak GiB | date | commit | file |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...(train.length ? train : ['| (no runs yet) |']),
    '',
    '### Kernels',
    '',
    '| device | kernel | weights | shape (M×N×K) | ms | TFLOP/s | date | commit |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...(kernels.length ? kernels : ['| (no runs yet) |']),
  ];
  return out.join('\n');
}

export const TABLE_START = '<!-- results:start (generated by `npm run bench -- --table --readme bench/README.md`) -->';
export const TABLE_END = '<!-- results:end -->';

/** Replace the generated section of a markdown file. */
export function writeTablesInto(file: string, tables: string): void {
  const text = fs.readFileSync(file, 'utf8');
  const a = text.indexOf(TABLE_START);
  const b = text.indexOf(TABLE_END);
  if (a < 0 || b < a) throw new UserError(`${file}: no section between ${TABLE_START} and ${TABLE_END}`);
  fs.writeFileSync(file, `${text.slice(0, a + TABLE_START.length)}\n${tables}\n${text.slice(b)}`);
}
