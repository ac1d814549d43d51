import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program, storageRanges, type BufferRange, type Dispatch } from '../src/gpu/program.js';
import { qkLayout, qkNormRopeRef, recordQkNormRope, type QkPair, type QkShape } from '../src/kernels/qk-norm-rope.js';
import { qkNormRopeBackwardRef, recordQkNormRopeBackward } from '../src/kernels/qk-norm-rope-backward.js';
import { rmsnormBackwardRef } from '../src/kernels/rmsnorm-backward.js';
import { ropeRef } from '../src/kernels/rope.js';
import { maxAbsDiff, maxRelDiff, randArray, rng, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

const theta = 1e6;
const eps = 1e-6;
// Odd token and head counts, GQA (3 q heads, 1 k head): rows not a multiple of rows per workgroup, and at most
// head dims the k range starts past a gap (q's bytes are not a multiple of 256). Positions up to 40000.
const N = 13;
const nHeads = 3;
const nKv = 1;
const r = rng(7);
const positions = Uint32Array.from({ length: N }, () => Math.floor(r() * 40001));
positions.set([0, 1, 40000, 32768, 12345]);

describe('qk-norm-rope layout', () => {
  it('packs short heads several to a workgroup and takes subgroups only for one row per workgroup', () => {
    expect(qkLayout(2, false)).toMatchObject({ half: 1, lanes: 1, rowsPerGroup: 64, pairsPerLane: 1, subgroups: false });
    expect(qkLayout(8, true)).toMatchObject({ half: 4, lanes: 4, rowsPerGroup: 16, pairsPerLane: 1, subgroups: false });
    expect(qkLayout(12, true)).toMatchObject({ half: 6, lanes: 8, rowsPerGroup: 8, pairsPerLane: 1, subgroups: false });
    expect(qkLayout(128, true)).toMatchObject({ half: 64, lanes: 64, rowsPerGroup: 1, pairsPerLane: 1, subgroups: true });
    expect(qkLayout(256, false)).toMatchObject({ half: 128, lanes: 64, rowsPerGroup: 1, pairsPerLane: 2, subgroups: false });
    expect(() => qkLayout(7, false)).toThrow(/even head_dim/);
  });
});

describe('qk-norm-rope references', () => {
  it('the backward reference is the fused forward reference\'s gradient, and per part the rmsnorm backward of the inverse rotation', () => {
    const headDim = 12;
    const s: QkShape = { N, nHeads, nKv, headDim };
    const x = pairOf(s, 1, 2);
    const w = { q: randArray(headDim, 2), k: randArray(headDim, 5, 1.5) };
    const dy = pairOf(s, 3);
    const { rstd } = qkNormRopeRef(x, w, positions, s, theta, eps);
    const dx = qkNormRopeBackwardRef(x, w, rstd, dy, positions, s, theta);
    // The forward is linear in dy's direction: <dy, J dx_dir> = <dx, dir>; check against central differences,
    // q and k moved together (each part depends only on its own input and weight).
    const dir = pairOf(s, 4);
    const dot = (a: QkPair<Float32Array>, b: QkPair<Float32Array>) => [a.q, a.k].reduce((t, v, j) => t + v.reduce((u, e, i) => u + e * [b.q, b.k][j]![i]!, 0), 0);
    const loss = (t: number) => {
      const moved = { q: x.q.map((v, i) => v + t * dir.q[i]!), k: x.k.map((v, i) => v + t * dir.k[i]!) };
      return dot(qkNormRopeRef(moved, w, positions, s, theta, eps).y, dy);
    };
    const h = 2 ** -10;
    const fd = (loss(h) - loss(-h)) / (2 * h);
    const analytic = dot(dx, dir);
    expect(Math.abs(fd - analytic) / Math.abs(analytic)).toBeLessThan(1e-3);
    const qRows = N * nHeads;
    expect(maxAbsDiff(dx.q, rmsnormBackwardRef(x.q, w.q, rstd.subarray(0, qRows), ropeRef(dy.q, positions, N, nHeads, headDim, theta, true), qRows, headDim))).toBe(0);
    expect(maxAbsDiff(dx.k, rmsnormBackwardRef(x.k, w.k, rstd.subarray(qRows), ropeRef(dy.k, positions, N, nKv, headDim, theta, true), N * nKv, headDim))).toBe(0);
    // The k part has its own weight: swapping in q's changes it.
    expect(maxAbsDiff(qkNormRopeRef(x, { q: w.q, k: w.q }, positions, s, theta, eps).y.k, qkNormRopeRef(x, w, positions, s, theta, eps).y.k)).toBeGreaterThan(1e-3);
  });
});

/** Random q [N, nHeads*headDim] and k [N, nKv*headDim]. */
function pairOf(s: QkShape, seed: number, scale = 1): QkPair<Float32Array> {
  return { q: randArray(s.N * s.nHeads * s.headDim, seed, scale), k: randArray(s.N * s.nKv * s.headDim, seed + 1000, scale) };
}

const SENTINEL = 1234.5;

/** Adjacent q|k ranges of one buffer (as the graph allocates them), the gap and tail filled with SENTINEL. */
function uploadPair(v: QkPair<Float32Array>): QkPair<BufferRange> {
  const [q, k] = storageRanges(gpu, [v.q.byteLength, v.k.byteLength], 'q|k');
  const all = new Float32Array(q!.buffer.size / 4).fill(SENTINEL);
  all.set(v.q, q!.offset / 4);
  all.set(v.k, k!.offset / 4);
  gpu.write(q!.buffer, all);
  return { q: q!, k: k! };
}

/** The q and k ranges' values, and the largest deviation from SENTINEL elsewhere in the buffer. */
async function readPair(r: QkPair<BufferRange>): Promise<QkPair<Float32Array> & { outside: number }> {
  const all = await gpu.readF32(r.q.buffer);
  const q = all.slice(r.q.offset / 4, (r.q.offset + r.q.size) / 4);
  const k = all.slice(r.k.offset / 4, (r.k.offset + r.k.size) / 4);
  let outside = 0;
  all.forEach((v, i) => {
    const inQ = i >= r.q.offset / 4 && i < (r.q.offset + r.q.size) / 4;
    const inK = i >= r.k.offset / 4 && i < (r.k.offset + r.k.size) / 4;
    if (!inQ && !inK) outside = Math.max(outside, Math.abs(v - SENTINEL));
  });
  return { q, k, outside };
}

async function runBoth(s: QkShape, subgroups: boolean) {
  const x = pairOf(s, s.headDim, 3);
  const w = { q: randArray(s.headDim, s.headDim + 1, 1.5), k: randArray(s.headDim, s.headDim + 7, 1.5) };
  const dy = pairOf(s, s.headDim + 2);
  const xBuf = uploadPair(x);
  const wBuf = { q: gpu.upload(w.q), k: gpu.upload(w.k) };
  const posBuf = gpu.upload(positions);
  const y = uploadPair(pairOf(s, 98)); // overwritten
  const rows = s.N * (s.nHeads + s.nKv);
  const rstd = gpu.storage(rows * 4);
  const dx = uploadPair(pairOf(s, 99)); // overwritten
  const prog = new Program(gpu);
  const rope = { ...s, positions: posBuf, theta, subgroups };
  recordQkNormRope(prog, { ...rope, x: xBuf, weight: wBuf, y, rstd, eps });
  recordQkNormRopeBackward(prog, { ...rope, x: xBuf, weight: wBuf, rstd, dy: uploadPair(dy), dx });
  prog.run();
  const ref = qkNormRopeRef(x, w, positions, s, theta, eps);
  const dxRef = qkNormRopeBackwardRef(x, w, ref.rstd, dy, positions, s, theta);
  const yGot = await readPair(y);
  const dxGot = await readPair(dx);
  return {
    prog,
    y: Math.max(maxRelDiff(yGot.q, ref.y.q), maxRelDiff(yGot.k, ref.y.k)),
    rstd: maxRelDiff(await gpu.readF32(rstd, rows), ref.rstd),
    dx: Math.max(maxRelDiff(dxGot.q, dxRef.q), maxRelDiff(dxGot.k, dxRef.k)),
    outside: Math.max(yGot.outside, dxGot.outside),
  };
}

describe('qk-norm-rope forward and backward', () => {
  for (const headDim of [2, 8, 12, 16, 128, 256]) {
    it(`match the fused references, ${nHeads} q heads and ${nKv} k head x ${headDim}, workgroup-memory row sums`, async () => {
      const err = await runBoth({ N, nHeads, nKv, headDim }, false);
      expect(err.y).toBeLessThan(2e-6);
      expect(err.rstd).toBeLessThan(1e-6);
      expect(err.dx).toBeLessThan(1e-5);
      expect(err.outside).toBe(0);
    });
  }

  it('match the fused references with as many k heads as q heads (7 tokens, 2 + 2 heads x 10)', async () => {
    const err = await runBoth({ N: 7, nHeads: 2, nKv: 2, headDim: 10 }, false);
    expect(err.y).toBeLessThan(2e-6);
    expect(err.rstd).toBeLessThan(1e-6);
    expect(err.dx).toBeLessThan(1e-5);
    expect(err.outside).toBe(0);
  });

  it('refuse q and k that are not adjacent ranges of one buffer', () => {
    const s = { N: 1, nHeads: 1, nKv: 1, headDim: 4 };
    const pair = uploadPair(pairOf(s, 1));
    const other = uploadPair(pairOf(s, 2));
    const args = { ...s, weight: { q: gpu.storage(16), k: gpu.storage(16) }, rstd: gpu.storage(16), positions: gpu.storage(4), theta, eps };
    expect(() => recordQkNormRope(new Program(gpu), { ...args, x: { q: pair.q, k: other.k }, y: other })).toThrow(/ranges of 16 and 16 bytes of one buffer/);
    expect(() => recordQkNormRope(new Program(gpu), { ...args, x: pair, y: { q: other.k, k: other.q } })).toThrow(/k after q/);
  });

  it('match the references with the subgroup row sum at headDim 128 and 256 (or refuse it without subgroups)', async () => {
    if (!gpu.features.subgroups) {
      const s = { N: 1, nHeads: 1, nKv: 1, headDim: 128 };
      expect(() => recordQkNormRope(new Program(gpu), {
        ...s, x: uploadPair(pairOf(s, 1)), weight: { q: gpu.storage(512), k: gpu.storage(512) }, y: uploadPair(pairOf(s, 2)), rstd: gpu.storage(8), positions: gpu.storage(4),
        theta, eps, subgroups: true,
      })).toThrow(/no subgroups/);
      return;
    }
    for (const headDim of [128, 256]) {
      const s = { N, nHeads, nKv, headDim };
      const err = await runBoth(s, true);
      expect(err.y).toBeLessThan(2e-6);
      expect(err.rstd).toBeLessThan(1e-6);
      expect(err.dx).toBeLessThan(1e-5);
      expect(err.outside).toBe(0);
      // The variant is its own pipeline (the cache keys by source), and a re-recording reuses it.
      const plain = (await runBoth(s, false)).prog.steps as Dispatch[];
      const again = (await runBoth(s, true)).prog.steps as Dispatch[];
      expect(again[0]!.pipeline).not.toBe(plain[0]!.pipeline);
      expect(again[0]!.pipeline).toBe(((await runBoth(s, true)).prog.steps[0] as Dispatch).pipeline);
    }
  });
});
