import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { AdamW, adamwRef, type AdamWHyper } from '../src/kernels/adamw.js';
import { gradSumSquaresRef, recordGradSumSquares } from '../src/kernels/grad-norm.js';
import { maxAbsDiff, randArray, testGpu, FIXTURES } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

const SIZES = [37, 1000, 4099];

describe('grad sum of squares', () => {
  // One tensor large enough to hit the cap on partial sums per tensor (64 workgroups of 4096 elements).
  const sizes = [1, 37, 1000, 4099, 300_001];

  it('matches the reference and is bit-identical across runs', async () => {
    const grads = sizes.map((n, i) => randArray(n, 10 + i, 0.5));
    const out = gpu.storage(4);
    const prog = new Program(gpu);
    recordGradSumSquares(prog, { grads: grads.map((g) => ({ buffer: gpu.upload(g), count: g.length })), out });
    prog.run();
    const first = (await gpu.readF32(out, 1))[0]!;
    const ref = gradSumSquaresRef(grads);
    expect(Math.abs(first - ref) / ref).toBeLessThan(1e-5);
    prog.run();
    expect((await gpu.readF32(out, 1))[0]).toBe(first);
  });

  it('counts only `count` elements of a larger buffer', async () => {
    const g = randArray(50, 3);
    const out = gpu.storage(4);
    const prog = new Program(gpu);
    recordGradSumSquares(prog, { grads: [{ buffer: gpu.upload(g), count: 33 }], out });
    prog.run();
    expect((await gpu.readF32(out, 1))[0]).toBeCloseTo(gradSumSquaresRef([g.subarray(0, 33)]), 4);
  });
});

interface Setup {
  opt: AdamW;
  prog: Program;
  paramBufs: GPUBuffer[];
  gradBufs: GPUBuffer[];
}

function setup(params: Float32Array[], hp: AdamWHyper): Setup {
  const paramBufs = params.map((p) => gpu.upload(p));
  const gradBufs = params.map((p) => gpu.storage(p.length * 4));
  const opt = new AdamW(gpu, params.map((p, i) => ({ param: paramBufs[i]!, grad: gradBufs[i]!, count: p.length })), hp);
  const prog = new Program(gpu);
  opt.record(prog);
  return { opt, prog, paramBufs, gradBufs };
}

function runStep(s: Setup, grads: Float32Array[], step: number, lr: number): void {
  grads.forEach((g, i) => gpu.write(s.gradBufs[i]!, g));
  s.opt.setStep(step, lr);
  s.prog.run();
}

async function readParams(s: Setup, sizes: number[]): Promise<Float32Array[]> {
  return Promise.all(s.paramBufs.map((b, i) => gpu.readF32(b, sizes[i])));
}

function maxDiffAll(a: Float32Array[], b: Float32Array[]): number {
  return Math.max(...a.map((x, i) => maxAbsDiff(x, b[i]!)));
}

describe('AdamW', () => {
  // Gradient norm here is about sqrt(5136 / 3) ≈ 41: maxGradNorm 5 clips, 1e6 and 0 do not.
  for (const maxGradNorm of [5, 1e6, 0]) {
    it(`matches the reference over three steps (maxGradNorm ${maxGradNorm})`, async () => {
      const hp: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm };
      const params = SIZES.map((n, i) => randArray(n, 100 + i));
      const ref = { params: params.map((p) => p.slice()), m: SIZES.map((n) => new Float32Array(n)), v: SIZES.map((n) => new Float32Array(n)) };
      const s = setup(params, hp);
      const lrs = [1e-3, 5e-4, 2e-3];
      for (let step = 1; step <= 3; step++) {
        const grads = SIZES.map((n, i) => randArray(n, 1000 * step + i));
        const r = adamwRef(ref, grads, hp, step, lrs[step - 1]!);
        runStep(s, grads, step, lrs[step - 1]!);
        const stats = await s.opt.readStats();
        expect(Math.abs(stats.gradNorm - r.gradNorm) / r.gradNorm).toBeLessThan(1e-5);
      }
      const got = await readParams(s, SIZES);
      expect(maxDiffAll(got, ref.params)).toBeLessThan(1e-6);
      // Moments scale with the clipped gradient (|m| <= 0.271 unclipped, about 8 times less clipped), so they
      // show whether clipping happened.
      const st = await s.opt.state();
      expect(st.step).toBe(3);
      expect(maxDiffAll(st.m, ref.m)).toBeLessThan(1e-6);
      expect(maxDiffAll(st.v, ref.v)).toBeLessThan(1e-6);
      const maxM = Math.max(...st.m.map((m) => Math.max(...m.map(Math.abs))));
      if (maxGradNorm === 5) expect(maxM).toBeLessThan(0.1);
      else expect(maxM).toBeGreaterThan(0.1);
      expect(await s.opt.readStats()).toMatchObject({ skippedSteps: 0, consecutiveBad: 0 });
      s.opt.destroy();
    });
  }

  it('skips non-finite steps on the GPU and counts them', async () => {
    const hp: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 };
    const params = SIZES.map((n, i) => randArray(n, 200 + i));
    const s = setup(params, hp);
    const good = (seed: number) => SIZES.map((n, i) => randArray(n, seed + i));

    runStep(s, good(300), 1, 1e-3);
    const before = await readParams(s, SIZES);
    const stateBefore = await s.opt.state();

    const nan = good(400);
    nan[2]![4098] = NaN;
    runStep(s, nan, 2, 1e-3);
    expect(await s.opt.readStats()).toMatchObject({ skippedSteps: 1, consecutiveBad: 1 });
    const inf = good(500);
    inf[0]![5] = Infinity;
    runStep(s, inf, 2, 1e-3);
    const stats = await s.opt.readStats();
    expect(stats).toMatchObject({ skippedSteps: 2, consecutiveBad: 2 });
    expect(Number.isFinite(stats.gradNorm)).toBe(false);
    expect(maxDiffAll(await readParams(s, SIZES), before)).toBe(0);
    const stateAfter = await s.opt.state();
    expect(maxDiffAll(stateAfter.m, stateBefore.m)).toBe(0);
    expect(maxDiffAll(stateAfter.v, stateBefore.v)).toBe(0);

    // The next good step updates as if the bad ones never happened, and resets only the consecutive count.
    const ref = { params: before, m: stateBefore.m, v: stateBefore.v };
    const grads = good(600);
    adamwRef(ref, grads, hp, 2, 1e-3);
    runStep(s, grads, 2, 1e-3);
    expect(await s.opt.readStats()).toMatchObject({ skippedSteps: 2, consecutiveBad: 0 });
    expect(maxDiffAll(await readParams(s, SIZES), ref.params)).toBeLessThan(1e-6);

    // The counters travel with the saved state, so a resumed run keeps counting.
    runStep(s, nan, 3, 1e-3);
    const saved = await s.opt.state();
    expect(saved).toMatchObject({ skippedSteps: 3, consecutiveBad: 1 });
    const resumed = setup(await readParams(s, SIZES), hp);
    resumed.opt.loadState(saved);
    expect(await resumed.opt.readStats()).toMatchObject({ skippedSteps: 3, consecutiveBad: 1 });
    resumed.opt.destroy();
    s.opt.destroy();
  });

  it('resumes from a saved state exactly', async () => {
    const hp: AdamWHyper = { beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1, maxGradNorm: 10 };
    const params = SIZES.map((n, i) => randArray(n, 700 + i));
    const a = setup(params, hp);
    runStep(a, SIZES.map((n, i) => randArray(n, 800 + i)), 1, 1e-2);
    const saved = await a.opt.state();
    const b = setup(await readParams(a, SIZES), hp);
    b.opt.loadState(saved);
    expect((await b.opt.state()).step).toBe(1);
    const grads = SIZES.map((n, i) => randArray(n, 900 + i));
    runStep(a, grads, 2, 1e-2);
    runStep(b, grads, 2, 1e-2);
    expect(maxDiffAll(await readParams(b, SIZES), await readParams(a, SIZES))).toBe(0);
    a.opt.destroy();
    b.opt.destroy();
  });
});

describe('AdamW over flat buffers', () => {
  it('updates tensors packed at 256-aligned ranges of one buffer in one dispatch, each as the reference does', async () => {
    const hp: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 5 };
    // Element offsets on 64-float (256-byte) boundaries, gaps between the tensors.
    const offsets = SIZES.reduce<number[]>((o, n, i) => [...o, i === 0 ? 0 : Math.ceil((o[i - 1]! + SIZES[i - 1]!) / 64) * 64], []);
    const count = Math.ceil((offsets.at(-1)! + SIZES.at(-1)!) / 64) * 64;
    const tensors = SIZES.map((n, i) => ({ buffer: 0, offset: offsets[i]!, count: n }));
    const pack = (parts: Float32Array[]) => {
      const flat = new Float32Array(count);
      parts.forEach((p, i) => flat.set(p, offsets[i]));
      return flat;
    };
    const unpack = (flat: Float32Array) => tensors.map((t) => flat.slice(t.offset, t.offset + t.count));
    const params = SIZES.map((n, i) => randArray(n, 1100 + i));
    const param = gpu.upload(pack(params));
    const grad = gpu.storage(count * 4);
    const make = () => new AdamW(gpu, [{ param, grad, count }], hp, tensors);
    const opt = make();
    const prog = new Program(gpu);
    opt.record(prog);
    expect(prog.steps.filter((d) => d.label === 'adamw.update').length).toBe(1);
    const ref = { params: params.map((p) => p.slice()), m: SIZES.map((n) => new Float32Array(n)), v: SIZES.map((n) => new Float32Array(n)) };
    for (let step = 1; step <= 2; step++) {
      const grads = SIZES.map((n, i) => randArray(n, 1200 + 10 * step + i));
      adamwRef(ref, grads, hp, step, 1e-3);
      gpu.write(grad, pack(grads));
      opt.setStep(step, 1e-3);
      prog.run();
    }
    const flat = await gpu.readF32(param, count);
    expect(maxDiffAll(unpack(flat), ref.params)).toBeLessThan(1e-6);
    // The gaps between tensors stay zero.
    expect(flat.every((x, i) => tensors.some((t) => i >= t.offset && i < t.offset + t.count) || x === 0)).toBe(true);
    // The state is per tensor, and loads back into the same places.
    const st = await opt.state();
    expect(st.m.map((m) => m.length)).toEqual(SIZES);
    expect(maxDiffAll(st.m, ref.m)).toBeLessThan(1e-6);
    expect(maxDiffAll(st.v, ref.v)).toBeLessThan(1e-6);
    const resumed = make();
    resumed.loadState(st);
    const back = await resumed.state();
    expect(maxDiffAll(back.m, st.m)).toBe(0);
    expect(maxDiffAll(back.v, st.v)).toBe(0);
    opt.destroy();
    resumed.destroy();
  });
});

/** Minimal safetensors reader for the fixture (F32 tensors only); the project's reader lives elsewhere. */
function readSafetensors(file: string): Map<string, Float32Array> {
  const bytes = readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const out = new Map<string, Float32Array>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'F32') continue;
    const [start, end] = t.data_offsets;
    const data = bytes.subarray(8 + headerLen + start, 8 + headerLen + end);
    out.set(name, new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)));
  }
  return out;
}

describe('AdamW against torch (tiny-tied fixture)', () => {
  it('reproduces one torch.optim.AdamW step within 1e-6', async () => {
    const dir = `${FIXTURES}/tiny-tied`;
    const caseInfo = JSON.parse(readFileSync(`${dir}/case.json`, 'utf8')) as {
      adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
    };
    const adapter = readSafetensors(`${dir}/adapter/adapter_model.safetensors`);
    const fixture = readSafetensors(`${dir}/case.safetensors`);
    const names = [...adapter.keys()];
    expect(names.length).toBe(28);
    const inMemory = (n: string) => n.replace(/\.weight$/, '.default.weight');
    const grads = names.map((n) => fixture.get(`grad.${inMemory(n)}`)!);
    const expected = names.map((n) => fixture.get(`step1.${inMemory(n)}`)!);
    expect(grads.every((g) => g) && expected.every((e) => e)).toBe(true);

    const { lr, betas, eps, weight_decay } = caseInfo.adamw;
    const s = setup(names.map((n) => adapter.get(n)!), { beta1: betas[0], beta2: betas[1], eps, weightDecay: weight_decay, maxGradNorm: 0 });
    runStep(s, grads, 1, lr);
    const got = await readParams(s, expected.map((e) => e.length));
    expect(maxDiffAll(got, expected)).toBeLessThanOrEqual(1e-6);
    // The step is real: parameters moved by about lr.
    expect(maxDiffAll(got, names.map((n) => adapter.get(n)!))).toBeGreaterThan(lr / 2);
    s.opt.destroy();
  });
});
