// Kernel tuning for a training job: the model's projection shapes at the job's tokens per step, the results
// kept in the user's cache folder ($XDG_CACHE_HOME/loraforge, else ~/.cache/loraforge; LORAFORGE_CACHE_DIR
// overrides) as kernel-tuning.json, one record per adapter and driver.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isSoftwareAdapter, type Gpu } from '../gpu/device.js';
import type { MatrixDType } from '../gpu/matrix.js';
import { prepareTuning, type ProjectionShape, type TuningRecord, type TuningStore } from '../kernels/tune.js';
import { PROJECTIONS, type ModelConfig } from '../model/family.js';
import { projectionDims } from '../model/families.js';

export function userCacheDir(): string {
  if (process.env.LORAFORGE_CACHE_DIR) return process.env.LORAFORGE_CACHE_DIR;
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'loraforge');
}

/** The tuning records in `dir`/kernel-tuning.json; an unreadable file counts as empty (it is redone). */
export function fileTuningStore(dir = userCacheDir()): TuningStore {
  const file = path.join(dir, 'kernel-tuning.json');
  return {
    load(): TuningRecord[] {
      try {
        const records = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
        return Array.isArray(records) ? (records as TuningRecord[]) : [];
      } catch {
        return [];
      }
    },
    save(records: TuningRecord[]): void {
      fs.mkdirSync(dir, { recursive: true });
      // Written whole then renamed: a killed run leaves the previous file, never half of one.
      const tmp = `${file}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify(records, null, 1));
      fs.renameSync(tmp, file);
    },
  };
}

/** The seven projections' weight product shapes for `tokens` tokens per step. */
export function projectionShapes(config: ModelConfig, tokens: number, dtype: MatrixDType): ProjectionShape[] {
  return PROJECTIONS.map((p) => {
    const [inDim, outDim] = projectionDims(config, p);
    return { M: tokens, N: outDim, K: inDim, dtype };
  });
}

export interface JobTuningOptions {
  /** The config's kernel_tuning key. */
  enabled: boolean;
  /** The config's subgroup_matrix key. */
  matrix: boolean;
  /** Time again even when cached (`loraforge tune`). */
  redo?: boolean;
  store?: TuningStore;
  onProgress?: (line: string) => void;
}

/**
 * Install the kernel choices for a job. A software adapter (lavapipe) is not timed unless asked (`redo`):
 * its timings say nothing about a GPU and its compiler takes minutes per variant.
 */
export async function tuneForJob(gpu: Gpu, config: ModelConfig, tokens: number, dtype: MatrixDType, o: JobTuningOptions) {
  const enabled = o.enabled && (!!o.redo || !isSoftwareAdapter(gpu.adapterInfo));
  return prepareTuning(gpu, projectionShapes(config, tokens, dtype), o.store ?? fileTuningStore(), { enabled, matrix: o.matrix, redo: o.redo, onProgress: o.onProgress });
}
