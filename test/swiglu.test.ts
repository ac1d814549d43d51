import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { recordSwiglu, recordSwigluBackward, swigluBackwardRef, swigluRef } from '../src/kernels/swiglu.js';
import { maxAbsDiff, maxRelDiff, randArray, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

// Random gates plus the extremes where a naive exp(-g) overflows.
const extremes = [0, -0.5, 1e-8, 30, -30, 90, -90, 100, -100, 1e4, -1e4, 1e30, -1e30];
const count = 1000 + extremes.length; // not a multiple of the workgroup size
const gate = randArray(count, 11, 8);
gate.set(extremes, count - extremes.length);
const up = randArray(count, 12, 2);
const dOut = randArray(count, 13, 1);

describe('swiglu reference', () => {
  it('is exact at the extremes: silu(g) -> g for large g, -> 0 for very negative g', () => {
    const out = swigluRef(Float32Array.from([100, -100, 1e4, -1e4]), Float32Array.from([1, 1, 1, 1]));
    expect([out[0], out[2], out[3]]).toEqual([100, 1e4, -0]);
    expect(out[1]).toBeLessThan(0);
    expect(out[1]).toBeGreaterThan(-1e-40);
  });

  it('backward matches central differences of the forward', () => {
    const n = 200; // the random part only: finite differences near f32 overflow say nothing
    const g = gate.subarray(0, n);
    const u = up.subarray(0, n);
    const d = dOut.subarray(0, n);
    const { dGate, dUp } = swigluBackwardRef(g, u, d);
    const h = 2 ** -8;
    const shifted = (v: Float32Array, by: number) => v.map((x) => x + by);
    const fdGate = swigluRef(shifted(g, h), u).map((v, i) => ((v - swigluRef(shifted(g, -h), u)[i]!) / (2 * h)) * d[i]!);
    const fdUp = swigluRef(g, shifted(u, h)).map((v, i) => ((v - swigluRef(g, shifted(u, -h))[i]!) / (2 * h)) * d[i]!);
    expect(maxAbsDiff(dGate, fdGate)).toBeLessThan(2e-3);
    expect(maxAbsDiff(dUp, fdUp)).toBeLessThan(2e-3);
  });
});

/** WGSL allows exp(x) an error of 3 + 2|x| ULP; silu of a negative gate inherits it relative to the value. */
function expectClose(got: Float32Array, want: Float32Array): void {
  for (let i = 0; i < count; i++) {
    const ulps = 4 + 2 * Math.min(Math.abs(gate[i]!), 100);
    expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(ulps * 2 ** -23 * Math.abs(want[i]!) + 1e-30);
  }
}

describe('swiglu', () => {
  it('forward matches the reference, finite at the extremes', async () => {
    const out = gpu.storage(count * 4);
    const prog = new Program(gpu);
    recordSwiglu(prog, { gate: gpu.upload(gate), up: gpu.upload(up), out, count });
    prog.run();
    const got = await gpu.readF32(out, count);
    expect(got.every(Number.isFinite)).toBe(true);
    expectClose(got, swigluRef(gate, up));
  });

  it('backward matches the reference, finite at the extremes', async () => {
    const dGate = gpu.storage(count * 4);
    const dUp = gpu.storage(count * 4);
    const prog = new Program(gpu);
    recordSwigluBackward(prog, { gate: gpu.upload(gate), up: gpu.upload(up), dOut: gpu.upload(dOut), dGate, dUp, count });
    prog.run();
    const ref = swigluBackwardRef(gate, up, dOut);
    const gotGate = await gpu.readF32(dGate, count);
    const gotUp = await gpu.readF32(dUp, count);
    expect(gotGate.every(Number.isFinite) && gotUp.every(Number.isFinite)).toBe(true);
    expectClose(gotUp, ref.dUp);
    // dGate sums terms of both signs (s and g*s*(1-s)), so compare it to its own scale.
    expect(maxRelDiff(gotGate, ref.dGate)).toBeLessThan(2e-6);
  });
});
