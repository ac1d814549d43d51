// Loaded before every test file (vitest setupFiles): a WebGPU validation, out-of-memory or internal error fails
// the test that caused it. Each device made by testGpu gets error scopes pushed before each test and popped after
// it; errors outside any test (beforeAll) or on a device made during the test are the uncaptured ones the device
// recorded, reported by the next afterEach. Without this, Dawn only prints such errors and a test comparing two
// runs of the same rejected dispatch passes.
import { afterEach, beforeEach } from 'vitest';
import { GpuValidationError, type Gpu } from '../src/gpu/device.js';
import { testGpus } from './helpers.js';

const FILTERS: GPUErrorFilter[] = ['validation', 'out-of-memory', 'internal'];
/** Devices whose scopes this test pushed. */
const scoped = new Set<Gpu>();

beforeEach(() => {
  for (const gpu of testGpus) {
    if (gpu.isDestroyed) continue;
    for (const f of FILTERS) gpu.device.pushErrorScope(f);
    scoped.add(gpu);
  }
});

afterEach(async () => {
  const errors: string[] = [];
  for (const gpu of testGpus) {
    if (scoped.has(gpu)) {
      for (const f of [...FILTERS].reverse()) {
        const error = await gpu.device.popErrorScope().catch(() => null);
        if (error) errors.push(`${f}: ${error.message}`);
      }
    }
    if (!gpu.isDestroyed) await gpu.device.queue.onSubmittedWorkDone();
    errors.push(...gpu.takeErrors());
    if (gpu.isDestroyed) testGpus.delete(gpu);
  }
  scoped.clear();
  if (errors.length > 0) throw new GpuValidationError(errors);
});
