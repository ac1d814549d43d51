// Kernel tuning for a training job: the model's projection shapes at the job's tokens per step, timed or read
// from the caller's store (tuning-cache.ts in Node; memory in the browser worker). No Node API.
import { isSoftwareAdapter, type Gpu } from '../gpu/device.js';
import type { MatrixDType } from '../gpu/matrix.js';
import { prepareTuning, type ProjectionShape, type TuningStore } from '../kernels/tune.js';
import { PROJECTIONS, type ModelConfig } from '../model/family.js';
import { projectionDims } from '../model/families.js';

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
  store: TuningStore;
  onProgress?: (line: string) => void;
}

/**
 * Install the kernel choices for a job. A software adapter (lavapipe) is not timed unless asked (`redo`):
 * its timings say nothing about a GPU and its compiler takes minutes per variant.
 */
export async function tuneForJob(gpu: Gpu, config: ModelConfig, tokens: number, dtype: MatrixDType, o: JobTuningOptions) {
  const enabled = o.enabled && (!!o.redo || !isSoftwareAdapter(gpu.adapterInfo));
  return prepareTuning(gpu, projectionShapes(config, tokens, dtype), o.store, { enabled, matrix: o.matrix, redo: o.redo, onProgress: o.onProgress });
}
