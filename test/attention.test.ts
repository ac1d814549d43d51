import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { Program } from '../src/gpu/program.js';
import { attentionRef, forwardTiles, recordAttention, type AttentionShape, type AttentionVariant } from '../src/kernels/attention.js';
import {
  attentionBackwardRef, backwardTiles, dsUnitBytes, recordAttentionBackward, type AttentionBackwardShape, type AttentionBackwardVariant,
} from '../src/kernels/attention-backward.js';
import { maxAbsDiff, maxRelDiff, randArray, rng, testGpu } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterAll(() => gpu?.destroy());

/** Segment ids of packed samples: each row is cut into runs of 1..maxLen tokens, numbered upward. */
function packedSegments(B: number, T: number, maxLen: number, seed: number): Uint32Array {
  const r = rng(seed);
  const seg = new Uint32Array(B * T);
  for (let b = 0; b < B; b++) {
    let id = 0;
    let left = 1 + Math.floor(r() * maxLen);
    for (let t = 0; t < T; t++) {
      if (left === 0) { id++; left = 1 + Math.floor(r() * maxLen); }
      seg[b * T + t] = id;
      left--;
    }
  }
  return seg;
}

interface Inputs { q: Float32Array; k: Float32Array; v: Float32Array }

function inputs(B: number, Tq: number, Tk: number, nHeads: number, nKv: number, D: number, seed: number): Inputs {
  return {
    q: randArray(B * Tq * nHeads * D, seed, 1.5),
    k: randArray(B * Tk * nKv * D, seed + 1, 1.5),
    v: randArray(B * Tk * nKv * D, seed + 2),
  };
}

async function forwardGpu(
  x: Inputs, segQ: Uint32Array, segK: Uint32Array, s: AttentionShape, variant?: AttentionVariant,
): Promise<{ out: Float32Array; lse: Float32Array }> {
  const rowsQ = s.B * s.Tq;
  const out = gpu.storage(rowsQ * s.nHeads * s.headDim * 4);
  const lse = gpu.storage(rowsQ * s.nHeads * 4);
  const prog = new Program(gpu);
  recordAttention(prog, {
    q: gpu.upload(x.q), k: gpu.upload(x.k), v: gpu.upload(x.v), out, lse, segQ: gpu.upload(segQ), segK: gpu.upload(segK), ...s, variant,
  });
  prog.run();
  return { out: await gpu.readF32(out, rowsQ * s.nHeads * s.headDim), lse: await gpu.readF32(lse, rowsQ * s.nHeads) };
}

// [B, T, nHeads, nKv, headDim, longest packed sample]: odd T, odd and small head dims, GQA groups of 1 to 4.
type Shape = readonly [number, number, number, number, number, number];
const SHAPES: Shape[] = [
  [2, 33, 4, 2, 16, 9],
  [1, 47, 6, 2, 32, 47],
  [2, 19, 3, 3, 24, 6],
  [1, 13, 2, 1, 12, 5],
  [1, 29, 8, 2, 13, 11], // odd head_dim, 4 query heads per kv head
  [1, 20, 2, 1, 128, 20], // the real head_dim
];

/**
 * The variants besides the device's default (uniform loop bounds on lavapipe): constant bounds (what hardware
 * adapters run; small head dims only, as lavapipe's compiler unrolls them slowly) and the smallest tiles (the
 * 16 KiB of workgroup memory every WebGPU device has).
 */
const VARIANTS: { name: string; variant: AttentionBackwardVariant; shapes: Shape[] }[] = [
  { name: 'device default', variant: {}, shapes: SHAPES },
  { name: 'constant loop bounds', variant: { bounds: 'const' }, shapes: [[1, 29, 8, 2, 13, 11]] },
  { name: 'uniform loop bounds', variant: { bounds: 'uniform' }, shapes: [[2, 33, 4, 2, 16, 9]] },
  { name: '16 KiB tiles', variant: { workgroupBytes: 16384 }, shapes: [[1, 29, 8, 2, 13, 11], [1, 20, 2, 1, 128, 20]] },
];

// Each head_dim compiles its own tiles; lavapipe's compiler takes minutes on the larger ones on a 2-core machine.
describe('attention forward', { timeout: 600_000 }, () => {
  for (const { name, variant, shapes } of VARIANTS) {
    for (const [B, T, nHeads, nKv, D, maxLen] of shapes) {
      it(`matches the reference on B=${B} T=${T} heads=${nHeads}/${nKv} headDim=${D} (${name})`, async () => {
        const s = { B, Tq: T, Tk: T, qStart: 0, nHeads, nKv, headDim: D };
        const x = inputs(B, T, T, nHeads, nKv, D, T + D);
        const seg = packedSegments(B, T, maxLen, D);
        const ref = attentionRef(x.q, x.k, x.v, seg, seg, s);
        const got = await forwardGpu(x, seg, seg, s, variant);
        expect(maxAbsDiff(got.out, ref.out)).toBeLessThan(1e-5);
        expect(maxAbsDiff(got.lse, ref.lse)).toBeLessThan(1e-5);
      });
    }
  }

  it('picks tiles that fit the workgroup memory given', () => {
    for (const bytes of [16384, 32768, 49152, 65536]) {
      for (const [D, group] of [[128, 2], [13, 4], [96, 8]] as const) {
        const t = forwardTiles(D, group, bytes);
        const row = Math.ceil(D / 4) % 2 === 1 ? Math.ceil(D / 4) : Math.ceil(D / 4) + 1;
        const keys = 4 * t.keyLanes;
        const used = 16 * (t.rows * row + keys * row * (t.kvShared ? 1 : 2) + t.rows * (t.keyLanes % 2 ? t.keyLanes : t.keyLanes + 1)) + 4 * keys;
        expect(used).toBeLessThanOrEqual(bytes);
        expect(t.rows).toBeGreaterThanOrEqual(group);
        expect(backwardTiles(D, group, bytes).rowLanes * 4).toBeGreaterThanOrEqual(group);
      }
    }
    expect(forwardTiles(128, 2, 65536).rows).toBe(64);
  });

  it('packed segments do not see each other', () => {
    // Each sample alone must give the same rows as the packed pass.
    const s = { B: 1, Tq: 9, Tk: 9, qStart: 0, nHeads: 2, nKv: 1, headDim: 8 };
    const x = inputs(1, 9, 9, 2, 1, 8, 5);
    const seg = Uint32Array.from([0, 0, 0, 1, 1, 2, 2, 2, 2]);
    const packed = attentionRef(x.q, x.k, x.v, seg, seg, s);
    const starts = [0, 3, 5, 9];
    for (let i = 0; i < 3; i++) {
      const [a, e] = [starts[i]!, starts[i + 1]!];
      const n = e - a;
      const alone = attentionRef(
        x.q.slice(a * 16, e * 16), x.k.slice(a * 8, e * 8), x.v.slice(a * 8, e * 8), new Uint32Array(n), new Uint32Array(n),
        { ...s, Tq: n, Tk: n },
      );
      expect(maxAbsDiff(packed.out.subarray(a * 16, e * 16), alone.out)).toBeLessThan(1e-6);
    }
  });

  it('KV-cache form equals the last rows of a full pass', async () => {
    const [B, T, nHeads, nKv, D, newTokens] = [2, 20, 4, 2, 16, 3];
    const full = { B, Tq: T, Tk: T, qStart: 0, nHeads, nKv, headDim: D };
    const x = inputs(B, T, T, nHeads, nKv, D, 77);
    const seg = new Uint32Array(B * T);
    const fullOut = await forwardGpu(x, seg, seg, full);
    // Queries are the last `newTokens` rows of each batch row; keys and values are the whole cache.
    const width = nHeads * D;
    const qNew = new Float32Array(B * newTokens * width);
    for (let b = 0; b < B; b++) qNew.set(x.q.subarray((b * T + T - newTokens) * width, (b + 1) * T * width), b * newTokens * width);
    const cached = { ...full, Tq: newTokens, qStart: T - newTokens };
    const segQ = new Uint32Array(B * newTokens);
    const got = await forwardGpu({ ...x, q: qNew }, segQ, seg, cached);
    const ref = attentionRef(qNew, x.k, x.v, segQ, seg, cached);
    expect(maxAbsDiff(got.out, ref.out)).toBeLessThan(1e-5);
    expect(maxAbsDiff(got.lse, ref.lse)).toBeLessThan(1e-5);
    for (let b = 0; b < B; b++) {
      const lastRows = fullOut.out.subarray((b * T + T - newTokens) * width, (b + 1) * T * width);
      expect(maxAbsDiff(got.out.subarray(b * newTokens * width, (b + 1) * newTokens * width), lastRows)).toBeLessThan(1e-6);
    }
  });

  it('a query that sees no key gets zeros, not NaN', async () => {
    const s = { B: 1, Tq: 5, Tk: 5, qStart: 0, nHeads: 2, nKv: 2, headDim: 8 };
    const x = inputs(1, 5, 5, 2, 2, 8, 9);
    const segK = new Uint32Array(5);
    const segQ = Uint32Array.from([0, 0, 7, 0, 0]); // query 2 matches no key's segment
    const got = await forwardGpu(x, segQ, segK, s);
    const ref = attentionRef(x.q, x.k, x.v, segQ, segK, s);
    expect(maxAbsDiff(got.out, ref.out)).toBeLessThan(1e-5);
    expect(got.out.subarray(2 * 16, 3 * 16).every((y) => y === 0)).toBe(true);
  });
});

describe('attention backward', { timeout: 600_000 }, () => {
  it('reference matches finite differences of the reference forward', () => {
    const s: AttentionBackwardShape = { B: 1, T: 6, nHeads: 2, nKv: 1, headDim: 4 };
    const fwd = { B: 1, Tq: 6, Tk: 6, qStart: 0, nHeads: 2, nKv: 1, headDim: 4 };
    const x = inputs(1, 6, 6, 2, 1, 4, 21);
    const seg = Uint32Array.from([0, 0, 0, 1, 1, 1]);
    const dOut = randArray(6 * 2 * 4, 25);
    // loss = sum(out * dOut), so its gradient is what the backward returns for this dOut.
    const loss = (y: Inputs) => attentionRef(y.q, y.k, y.v, seg, seg, fwd).out.reduce((acc, o, i) => acc + o * dOut[i]!, 0);
    const grads = attentionBackwardRef(x.q, x.k, x.v, dOut, seg, seg, s);
    const eps = 1e-2;
    for (const [name, grad] of [['q', grads.dq], ['k', grads.dk], ['v', grads.dv]] as const) {
      const numeric = new Float32Array(grad.length);
      for (let i = 0; i < grad.length; i++) {
        const nudged = (delta: number): Inputs => {
          const y = { ...x, [name]: x[name].slice() };
          y[name][i] = x[name][i]! + delta;
          return y;
        };
        numeric[i] = (loss(nudged(eps)) - loss(nudged(-eps))) / (2 * eps);
      }
      expect(maxRelDiff(grad, numeric), name).toBeLessThan(1e-3);
    }
  });

  // A dS scratch smaller than the whole: the passes run chunk by chunk over it, chunks starting inside a (batch
  // row, kv head) add to the dK and dV of the chunk before. One query tile per chunk, and three (across pairs).
  const chunked = (units: number) => ({ name: `dS in chunks of ${units} query tiles`, shapes: [[2, 33, 4, 2, 16, 9]] as Shape[], units });
  const backwardCases: { name: string; variant?: AttentionBackwardVariant; shapes: Shape[]; units?: number }[] = [...VARIANTS, chunked(1), chunked(3)];
  for (const { name, variant: given, shapes, units } of backwardCases) {
    for (const [B, T, nHeads, nKv, D, maxLen] of shapes) {
      it(`matches the reference on B=${B} T=${T} heads=${nHeads}/${nKv} headDim=${D} (${name})`, async () => {
        const variant = units ? { scratchBytes: units * dsUnitBytes(T, nHeads / nKv, backwardTiles(D, nHeads / nKv, gpu.workgroupBytes)) } : given;
        const s = { B, T, nHeads, nKv, headDim: D };
        const fwd = { B, Tq: T, Tk: T, qStart: 0, nHeads, nKv, headDim: D };
        const x = inputs(B, T, T, nHeads, nKv, D, 3 * T + D);
        const seg = packedSegments(B, T, maxLen, D + 1);
        const dOutData = randArray(B * T * nHeads * D, T);
        const fwdRef = attentionRef(x.q, x.k, x.v, seg, seg, fwd);
        const ref = attentionBackwardRef(x.q, x.k, x.v, dOutData, seg, seg, s);

        const qElems = B * T * nHeads * D;
        const kvElems = B * T * nKv * D;
        const [dq, dk, dv] = [gpu.storage(qElems * 4), gpu.storage(kvElems * 4), gpu.storage(kvElems * 4)];
        const segBuf = gpu.upload(seg);
        const prog = new Program(gpu);
        recordAttentionBackward(prog, {
          q: gpu.upload(x.q), k: gpu.upload(x.k), v: gpu.upload(x.v), out: gpu.upload(fwdRef.out), dOut: gpu.upload(dOutData),
          lse: gpu.upload(fwdRef.lse), segQ: segBuf, segK: segBuf, dq, dk, dv, ...s, variant,
        });
        prog.run();
        expect(maxRelDiff(await gpu.readF32(dq, qElems), ref.dq)).toBeLessThan(1e-4);
        expect(maxRelDiff(await gpu.readF32(dk, kvElems), ref.dk)).toBeLessThan(1e-4);
        expect(maxRelDiff(await gpu.readF32(dv, kvElems), ref.dv)).toBeLessThan(1e-4);
      });
    }
  }

  it('chains with the GPU forward', async () => {
    const [B, T, nHeads, nKv, D] = [1, 21, 4, 1, 16];
    const fwd = { B, Tq: T, Tk: T, qStart: 0, nHeads, nKv, headDim: D };
    const x = inputs(B, T, T, nHeads, nKv, D, 4);
    const seg = packedSegments(B, T, 8, 3);
    const dOutData = randArray(B * T * nHeads * D, 8);
    const ref = attentionBackwardRef(x.q, x.k, x.v, dOutData, seg, seg, { B, T, nHeads, nKv, headDim: D });
    const [q, k, v, segBuf] = [gpu.upload(x.q), gpu.upload(x.k), gpu.upload(x.v), gpu.upload(seg)];
    const out = gpu.storage(B * T * nHeads * D * 4);
    const lse = gpu.storage(B * T * nHeads * 4);
    const [dq, dk, dv] = [gpu.storage(B * T * nHeads * D * 4), gpu.storage(B * T * nKv * D * 4), gpu.storage(B * T * nKv * D * 4)];
    const prog = new Program(gpu);
    recordAttention(prog, { q, k, v, out, lse, segQ: segBuf, segK: segBuf, ...fwd });
    recordAttentionBackward(prog, { q, k, v, out, dOut: gpu.upload(dOutData), lse, segQ: segBuf, segK: segBuf, dq, dk, dv, B, T, nHeads, nKv, headDim: D });
    prog.run();
    expect(maxRelDiff(await gpu.readF32(dq, ref.dq.length), ref.dq)).toBeLessThan(1e-4);
    expect(maxRelDiff(await gpu.readF32(dk, ref.dk.length), ref.dk)).toBeLessThan(1e-4);
    expect(maxRelDiff(await gpu.readF32(dv, ref.dv.length), ref.dv)).toBeLessThan(1e-4);
  });
});
