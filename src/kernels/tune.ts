// Tuning on the user's own GPU: every tiled-product variant (tile shape and outputs per invocation; f16 or f32
// staging where the device uses f16) is timed once at the model's projection shapes, and the fastest per shape
// is installed for the kernels to use. The result is cached per adapter and driver by the caller's store
// (a file in the user's cache folder in Node, localStorage or memory in a browser).
import type { Gpu } from '../gpu/device.js';
import { matrixFromBytes, matrixFromF32, matrixRowBytes, releaseMatrix, type MatrixDType } from '../gpu/matrix.js';
import { Program } from '../gpu/program.js';
import { recordMatmul } from './matmul.js';
import { recordMatmulInputGrad } from './matmul-input-grad.js';
import { WIDE_TILES } from './tiled-product.js';
import { forceTile, matrixProduct, setMatrixProduct, setTileChoices, shapeKey, type TileChoice } from './tuning.js';
import { recordMatrixMatmul, subgroupMatrixProduct, type MatrixProduct } from './subgroup-matrix.js';
import { seededRandom } from '../random.js';

/** Bumped when kernels change so that older cached choices are redone. */
export const TUNING_VERSION = 1;

/** One weight product shape: tokens x outputs x inputs of a projection. */
export interface ProjectionShape {
  M: number;
  /** W rows (outputs). */
  N: number;
  /** W columns (inputs). */
  K: number;
  dtype: MatrixDType;
}

/** A matrix-unit product's self-check on one adapter and driver: used only when `ok`. */
export interface MatrixVerdict {
  product: string;
  ok: boolean;
  /** max |matrix − f32| / max |f32| on the check case (Infinity for NaN or a failed compile). */
  error: number;
}

/** What the cache keeps: the adapter and driver it was measured on, the tile choices, the matrix verdicts. */
export interface TuningRecord {
  version: number;
  adapter: string;
  choices: Record<string, TileChoice>;
  matrix?: MatrixVerdict[];
}

/** Where tuning results live between runs (a file, localStorage, memory). */
export interface TuningStore {
  load(): TuningRecord[];
  save(records: TuningRecord[]): void;
}

/** The adapter and its driver as the adapter reports them: a new driver version is a new key. */
export function adapterKey(gpu: Gpu): string {
  const i = gpu.adapterInfo;
  const extra = i as unknown as { driver?: string; subgroupMinSize?: number; subgroupMaxSize?: number };
  return [i.vendor, i.architecture, i.device, i.description, extra.driver ?? '', gpu.useF16 ? 'f16' : 'f32'].join('|');
}

/** The variants tuning times on this device. */
export function tileVariants(gpu: Gpu): TileChoice[] {
  const staging = gpu.useF16 ? [false, true] : [false];
  return WIDE_TILES.flatMap((tile) => staging.map((f16) => ({ tile, f16 })));
}

/** Seconds per run of `prog`, the best of `reps` after one warm-up run. */
async function timeProgram(gpu: Gpu, prog: Program, reps: number): Promise<number> {
  prog.run();
  await gpu.sync();
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    prog.run();
    await gpu.sync();
    best = Math.min(best, (performance.now() - t0) / 1e3);
  }
  return best;
}

/**
 * Time every variant of the forward matmul and its input gradient at each shape and return the fastest per
 * product shape (keys as `shapeKey`). The weights are zeros: speed does not depend on the values.
 */
export async function tuneProjections(gpu: Gpu, shapes: ProjectionShape[], reps = 2, onProgress?: (line: string) => void, variants = tileVariants(gpu)): Promise<Record<string, TileChoice>> {
  const choices: Record<string, TileChoice> = {};
  const seen = new Set<string>();
  try {
    for (const s of shapes) {
      const key = shapeKey('matmul', s.M, s.N, s.K, s.dtype);
      if (seen.has(key)) continue;
      seen.add(key);
      const w = matrixFromBytes(gpu, new Uint8Array(s.N * matrixRowBytes(s.K, s.dtype)), s.N, s.K, s.dtype, 'tune.w');
      const x = gpu.storage(s.M * s.K * 4, 'tune.x');
      const y = gpu.storage(s.M * s.N * 4, 'tune.y');
      const kinds = [
        { kind: 'matmul' as const, record: (p: Program) => recordMatmul(p, { x, w, y, M: s.M }), key },
        { kind: 'matmul-input-grad' as const, record: (p: Program) => recordMatmulInputGrad(p, { dy: y, w, dx: x, M: s.M }), key: shapeKey('matmul-input-grad', s.M, s.K, s.N, s.dtype) },
      ];
      for (const k of kinds) {
        let best: { choice: TileChoice; s: number } | undefined;
        for (const choice of variants) {
          forceTile(gpu, choice);
          const prog = new Program(gpu);
          const owned = gpu.collect(() => k.record(prog));
          const seconds = await timeProgram(gpu, prog, reps);
          for (const b of owned) gpu.release(b);
          if (!best || seconds < best.s) best = { choice, s: seconds };
        }
        choices[k.key] = best!.choice;
        onProgress?.(`${k.key}: ${best!.choice.tile}${best!.choice.f16 ? ' f16' : ''} (${(best!.s * 1e3).toFixed(3)} ms)`);
      }
      releaseMatrix(gpu, w);
      gpu.release(x);
      gpu.release(y);
    }
  } finally {
    forceTile(gpu, undefined);
  }
  return choices;
}

/** The largest error the matrix path may show against f32 on the check case: f16 inputs round to 2^-11. */
export const MATRIX_TOLERANCE = 1e-2;

/**
 * Run `product` on a small projection (bf16 weights, LoRA, residual; odd sizes that pad every dimension) and
 * compare it with the f32 tiled path. Refuses on a compile or validation error, NaN, or a difference beyond
 * MATRIX_TOLERANCE.
 */
export async function selfCheckMatrixProduct(gpu: Gpu, product: MatrixProduct): Promise<{ ok: boolean; error: number }> {
  // Small enough that the packed operands fit the smallest binding limit (4 KiB) and pad on every side.
  const [M, N, K, r] = [21, 19, 40, 3];
  const rand = seededRandom(7);
  const values = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
  const w = matrixFromF32(gpu, values(N * K, 0.1), N, K, 'bf16', 'check.w');
  const bufs = [values(M * K), values(M * r), values(N * r, 0.1), values(M * N)].map((v) => gpu.upload(v));
  const [x, t, B, residual] = bufs as [GPUBuffer, GPUBuffer, GPUBuffer, GPUBuffer];
  const yRef = gpu.storage(M * N * 4);
  const yMat = gpu.storage(M * N * 4);
  const lora = { t, B, r, scale: 0.5 };
  // The reference is the tiled f32 path, whatever product is installed now.
  const installed = matrixProduct(gpu);
  setMatrixProduct(gpu, undefined);
  gpu.device.pushErrorScope('validation');
  gpu.device.pushErrorScope('internal');
  const ref = new Program(gpu);
  const mat = new Program(gpu);
  let recorded = false;
  const owned = gpu.collect(() => {
    recordMatmul(ref, { x, w, y: yRef, M, lora, residual });
    recorded = recordMatrixMatmul(mat, product, { x, w, y: yMat, M, lora, residual });
  });
  setMatrixProduct(gpu, installed);
  ref.run();
  mat.run();
  const errors = [await gpu.device.popErrorScope(), await gpu.device.popErrorScope()];
  let error = Infinity;
  if (recorded && errors.every((e) => !e)) {
    const [a, b] = [await gpu.readF32(yMat, M * N), await gpu.readF32(yRef, M * N)];
    let diff = 0, scale = 0;
    for (let i = 0; i < b.length; i++) {
      const d = Math.abs(a[i]! - b[i]!);
      diff = d > diff || Number.isNaN(d) ? (Number.isNaN(d) ? Infinity : d) : diff;
      scale = Math.max(scale, Math.abs(b[i]!));
    }
    error = diff / (scale || 1);
  }
  for (const buf of [...owned, ...bufs, yRef, yMat]) gpu.release(buf);
  releaseMatrix(gpu, w);
  return { ok: error <= MATRIX_TOLERANCE, error };
}

export interface PrepareTuningOptions {
  /** Time the variants and redo the matrix self-check even when the store has results for this adapter. */
  redo?: boolean;
  /** Off: the tile rule by shape, nothing timed. */
  enabled?: boolean;
  /** Off: never the matrix units (else they are used where offered and the self-check passes). */
  matrix?: boolean;
  /** Variants to time instead of `tileVariants(gpu)` (tests). */
  variants?: TileChoice[];
  /** Products to self-check instead of the adapter's subgroup-matrix configurations (tests). */
  matrixCandidates?: MatrixProduct[];
  reps?: number;
  onProgress?: (line: string) => void;
}

/**
 * Install the kernel choices for `gpu`: tile choices (stored ones for this adapter and driver when they cover
 * `shapes`, else timed now) and the first matrix-unit product whose self-check passes (stored verdicts reused).
 * New results are stored. Returns the tile choices, whether they were timed now, and the matrix product used.
 */
export async function prepareTuning(gpu: Gpu, shapes: ProjectionShape[], store: TuningStore, o: PrepareTuningOptions = {}): Promise<{ choices: Record<string, TileChoice>; tuned: boolean; matrix: string | undefined }> {
  const adapter = adapterKey(gpu);
  const records = store.load().filter((r) => r.version === TUNING_VERSION);
  const mine: TuningRecord = records.find((r) => r.adapter === adapter) ?? { version: TUNING_VERSION, adapter, choices: {} };
  let changed = false;
  let tuned = false;
  if (o.enabled === false) setTileChoices(gpu, {});
  else {
    const wanted = shapes.map((s) => shapeKey('matmul', s.M, s.N, s.K, s.dtype));
    if (o.redo || !wanted.every((k) => k in mine.choices)) {
      mine.choices = { ...mine.choices, ...(await tuneProjections(gpu, shapes, o.reps, o.onProgress, o.variants)) };
      changed = tuned = true;
    }
    setTileChoices(gpu, mine.choices);
  }
  setMatrixProduct(gpu, undefined);
  let matrix: string | undefined;
  if (o.matrix !== false) {
    const candidates = o.matrixCandidates ?? gpu.features.subgroupMatrix.map((c) => subgroupMatrixProduct(c, gpu.features.subgroupMaxSize));
    for (const product of candidates) {
      let verdict = o.redo ? undefined : mine.matrix?.find((v) => v.product === product.name);
      if (!verdict) {
        verdict = { product: product.name, ...(await selfCheckMatrixProduct(gpu, product)) };
        mine.matrix = [...(mine.matrix ?? []).filter((v) => v.product !== product.name), verdict];
        changed = true;
        o.onProgress?.(`${product.name}: self-check ${verdict.ok ? 'passed' : 'refused'} (error ${verdict.error})`);
      }
      if (verdict.ok) {
        setMatrixProduct(gpu, product);
        matrix = product.name;
        break;
      }
    }
  }
  if (changed) store.save([...records.filter((r) => r.adapter !== adapter), mine]);
  return { choices: mine.choices, tuned, matrix };
}

/** A store that lives as long as the process (a browser without localStorage, tests). */
export function memoryTuningStore(): TuningStore {
  let records: TuningRecord[] = [];
  return { load: () => records, save: (r) => { records = r; } };
}
