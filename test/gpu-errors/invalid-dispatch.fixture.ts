// Run only by gpu-errors.test.ts, in its own vitest: each test here makes a dispatch that WebGPU rejects, and each
// must be reported as failed by the hooks of gpu-errors-setup.ts although its own body asserts nothing false.
import { afterAll, expect, test } from 'vitest';
import { testGpu } from '../helpers.js';
import type { Gpu } from '../../src/gpu/device.js';

const KERNEL = '@group(0) @binding(0) var<storage, read_write> x: array<f32>;\n@compute @workgroup_size(1) fn main() { x[0] = 1.0; }';

/** A dispatch of more workgroups than any device allows (limit 65535 per dimension). */
function invalidDispatch(gpu: Gpu): void {
  const pipeline = gpu.pipeline(KERNEL);
  const buf = gpu.storage(16);
  const enc = gpu.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, gpu.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: buf } }] }));
  pass.dispatchWorkgroups(gpu.device.limits.maxComputeWorkgroupsPerDimension + 1);
  pass.end();
  gpu.device.queue.submit([enc.finish()]);
}

let shared: Gpu;

test('a device made before the test (error scopes)', async () => {
  shared ??= await testGpu();
  // The scopes are pushed for devices that exist when a test starts: make one in this test, dispatch in the next.
  expect(shared).toBeDefined();
});

test('invalid dispatch on a device that existed before the test', () => {
  invalidDispatch(shared);
  expect(true).toBe(true);
});

test('invalid dispatch on a device made during the test (uncaptured error)', async () => {
  const gpu = await testGpu();
  invalidDispatch(gpu);
  expect(true).toBe(true);
  await gpu.destroy();
});

afterAll(() => shared?.destroy());
