import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { packBf16, unpackBf16 } from '../src/gpu/dtype.js';
import { matrixFromF32, type WeightDType } from '../src/gpu/matrix.js';
import { Program } from '../src/gpu/program.js';
import {
  crossEntropyHiddenRef, crossEntropyOnePassRef, crossEntropyRef, recordCrossEntropy, recordCrossEntropyBackward, recordCrossEntropyForward, recordLogits,
} from '../src/kernels/cross-entropy.js';
import { matmulRef } from '../src/kernels/matmul.js';
import { maxAbsDiff, randArray, rng, testGpu, FIXTURES } from './helpers.js';

interface Case {
  N: number;
  H: number;
  V: number;
  hidden: Float32Array;
  lmHead: Float32Array;
  targets: Int32Array;
}

/** Targets in [0, V) with about a quarter of the rows set to −100 and one in 20 past the vocabulary (not counted either). */
function randomTargets(N: number, V: number, seed: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: N }, () => {
    const u = r();
    return u < 0.25 ? -100 : u < 0.3 ? V + Math.floor(r() * 3) : Math.floor(r() * V);
  });
}

/**
 * An lm head whose rows grow with their index, so each chunk's logits are larger than the last ones: the running
 * max moves at every chunk and the one-pass rescaling (α far below 1) is exercised.
 */
function growingHead(V: number, H: number, seed: number): Float32Array {
  const w = randArray(V * H, seed, 0.5);
  for (let v = 0; v < V; v++) for (let k = 0; k < H; k++) w[v * H + k]! *= 1 + (4 * v) / V;
  return w;
}

/** The lm head as the GPU sees it: bf16 rounds each weight. */
function asStored(w: Float32Array, dtype: WeightDType): Float32Array {
  if (dtype === 'f32') return w;
  return unpackBf16(new Uint16Array(packBf16(w).buffer, 0, w.length));
}

/** Run the fused op on the GPU; returns loss, dHidden and lse. */
async function runFused(
  gpu: Gpu,
  c: Case,
  dtype: WeightDType,
  invCount: number,
  chunk?: number,
): Promise<{ loss: number; dHidden: Float32Array; lse: Float32Array }> {
  const loss = gpu.storage(4);
  const dHidden = gpu.storage(c.N * c.H * 4);
  const prog = new Program(gpu);
  const { lse } = recordCrossEntropy(prog, {
    hidden: gpu.upload(c.hidden),
    lmHead: matrixFromF32(gpu, c.lmHead, c.V, c.H, dtype, 'lm_head'),
    targets: gpu.upload(c.targets),
    N: c.N,
    invCount: gpu.upload(new Float32Array([invCount])),
    loss,
    dHidden,
    chunk,
  });
  prog.run();
  return {
    loss: (await gpu.readF32(loss, 1))[0]!,
    dHidden: await gpu.readF32(dHidden, c.N * c.H),
    lse: await gpu.readF32(lse, c.N),
  };
}

function lseRef(logits: Float32Array, N: number, V: number): Float32Array {
  return Float32Array.from({ length: N }, (_, n) => {
    const row = logits.subarray(n * V, (n + 1) * V);
    const max = Math.max(...row);
    return max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
  });
}

function countOf(targets: Int32Array, V: number): number {
  return targets.filter((t) => t >= 0 && t < V).length;
}

describe('crossEntropyRef', () => {
  it('matches a hand-computed case', () => {
    // Row 0: softmax of [0, ln 2, ln 3] is [1/6, 2/6, 3/6], target 2 -> ln 2. Row 1 is not counted.
    const logits = new Float32Array([0, Math.log(2), Math.log(3), 7, -1, 2]);
    const { loss, dLogits } = crossEntropyRef(logits, new Int32Array([2, -100]), 2, 3);
    expect(loss).toBeCloseTo(Math.log(2), 6);
    expect(maxAbsDiff(dLogits, [1 / 6, 2 / 6, -3 / 6, 0, 0, 0])).toBeLessThan(1e-7);
  });

  it('its hidden-state gradient equals central finite differences of the loss (odd shapes, f64)', () => {
    const N = 11, H = 7, V = 31;
    const hidden = randArray(N * H, 51, 1);
    const lmHead = randArray(V * H, 52, 0.5);
    const targets = randomTargets(N, V, 53);
    const { dHidden } = crossEntropyHiddenRef(hidden, lmHead, targets, N, V, H);
    const step = 2 ** -10;
    let checked = 0;
    for (let i = 0; i < hidden.length; i++) {
      const x = hidden[i]!;
      hidden[i] = x + step; const up = crossEntropyHiddenRef(hidden, lmHead, targets, N, V, H).loss;
      hidden[i] = x - step; const down = crossEntropyHiddenRef(hidden, lmHead, targets, N, V, H).loss;
      hidden[i] = x;
      expect(Math.abs(dHidden[i]! - (up - down) / (2 * step)), `element ${i}`).toBeLessThan(1e-5);
      if (dHidden[i] !== 0) checked++;
    }
    expect(checked).toBeGreaterThan(hidden.length / 2);
  });

  it('the one-pass form (chunked, rescaled) gives the loss, lse and dh of the two-pass math (odd shapes)', () => {
    const N = 13, H = 9, V = 101;
    const hidden = randArray(N * H, 61, 1);
    const targets = randomTargets(N, V, 63);
    for (const [lmHead, chunk] of [[randArray(V * H, 62, 0.5), 17], [growingHead(V, H, 64), 30], [growingHead(V, H, 65), V]] as const) {
      const ref = crossEntropyHiddenRef(hidden, lmHead, targets, N, V, H, 0.1);
      const one = crossEntropyOnePassRef(hidden, lmHead, targets, N, V, H, chunk, 0.1);
      expect(Math.abs(one.loss - ref.loss) / ref.loss).toBeLessThan(1e-6);
      expect(maxAbsDiff(one.dHidden, ref.dHidden)).toBeLessThan(1e-6);
      expect(maxAbsDiff(one.lse, lseRef(matmulRef(hidden, lmHead, N, V, H), N, V))).toBeLessThan(1e-5);
    }
  });

  it('reproduces the fixture loss from HF logits (tiny-tied)', () => {
    const t = readSafetensors(`${FIXTURES}/tiny-tied/case.safetensors`);
    const [B, T, V] = t.shape('base_logits');
    const targets = shiftLabels(t.i32('labels'), B!, T!);
    const { loss } = crossEntropyRef(t.f32('base_logits'), targets, B! * T!, V!);
    expect(Math.abs(loss - t.f32('base_loss')[0]!)).toBeLessThan(1e-5);
  });
});

describe('fused cross-entropy on the GPU', () => {
  let gpu: Gpu;
  beforeAll(async () => { gpu = await testGpu(); });
  afterAll(() => gpu?.destroy());

  it('matches a hand-computed case across two chunks', async () => {
    // W rows [1,0], [0,1], [1,1]. Row 0: h = [ln 2, ln 3] -> logits ln [2, 3, 6], softmax [2, 3, 6]/11, target 0.
    // Row 1: h = 0 -> uniform softmax, target 1. Row 2 is not counted. Loss = (ln 5.5 + ln 3) / 2.
    const c: Case = {
      N: 3, H: 2, V: 3,
      hidden: new Float32Array([Math.log(2), Math.log(3), 0, 0, 5, -3]),
      lmHead: new Float32Array([1, 0, 0, 1, 1, 1]),
      targets: new Int32Array([0, 1, -100]),
    };
    const got = await runFused(gpu, c, 'f32', 1 / 2, 2);
    expect(Math.abs(got.loss - (Math.log(5.5) + Math.log(3)) / 2)).toBeLessThan(1e-6);
    // dh = (softmax − onehot)/2 · W.
    const want = [(-9 / 11 + 6 / 11) / 2, (3 / 11 + 6 / 11) / 2, (1 / 3 + 1 / 3) / 2, (-2 / 3 + 1 / 3) / 2, 0, 0];
    expect(maxAbsDiff(got.dHidden, want)).toBeLessThan(1e-6);
    expect(maxAbsDiff(got.lse, [Math.log(11), Math.log(3), 5 + Math.log(1 + Math.exp(-8) + Math.exp(-3))])).toBeLessThan(1e-6);
  });

  for (const dtype of ['f32', 'bf16'] as const) {
    it(`matches the reference on 37 tokens x 203 vocab in chunks of 50 (${dtype} lm head)`, async () => {
      const c: Case = {
        N: 37, H: 24, V: 203,
        hidden: randArray(37 * 24, 11, 1),
        lmHead: randArray(203 * 24, 12, 0.5),
        targets: randomTargets(37, 203, 13),
      };
      // As if the count covered more micro-batches than this one.
      const invCount = 1 / (countOf(c.targets, c.V) + 9);
      const w = asStored(c.lmHead, dtype);
      const ref = crossEntropyHiddenRef(c.hidden, w, c.targets, c.N, c.V, c.H, invCount);
      const got = await runFused(gpu, c, dtype, invCount, 50);
      expect(Math.abs(got.loss - ref.loss) / ref.loss).toBeLessThan(1e-5);
      expect(maxAbsDiff(got.dHidden, ref.dHidden)).toBeLessThan(1e-5);
      expect(maxAbsDiff(got.lse, lseRef(matmulRef(c.hidden, w, c.N, c.V, c.H), c.N, c.V))).toBeLessThan(1e-5);
    });
  }

  for (const dtype of ['f32', 'bf16'] as const) {
    it(`one pass with a running max that moves at every chunk matches its reference and the two-pass math (${dtype}, 29 x 157, chunks of 23)`, async () => {
      const c: Case = { N: 29, H: 14, V: 157, hidden: randArray(29 * 14, 71, 1), lmHead: growingHead(157, 14, 72), targets: randomTargets(29, 157, 73) };
      c.targets[0] = 156; // the last vocab row, in the last (short) chunk
      c.targets[1] = 0;
      const invCount = 1 / countOf(c.targets, c.V);
      const w = asStored(c.lmHead, dtype);
      const one = crossEntropyOnePassRef(c.hidden, w, c.targets, c.N, c.V, c.H, 23, invCount);
      const two = crossEntropyHiddenRef(c.hidden, w, c.targets, c.N, c.V, c.H, invCount);
      const got = await runFused(gpu, c, dtype, invCount, 23);
      expect(Math.abs(got.loss - one.loss) / one.loss).toBeLessThan(1e-5);
      expect(maxAbsDiff(got.dHidden, one.dHidden)).toBeLessThan(1e-5);
      expect(maxAbsDiff(got.dHidden, two.dHidden)).toBeLessThan(1e-5);
      expect(maxAbsDiff(got.lse, one.lse)).toBeLessThan(1e-4);
      // Rows not counted get no gradient.
      for (let n = 0; n < c.N; n++) {
        if (c.targets[n]! < 0 || c.targets[n]! >= c.V) expect(got.dHidden.subarray(n * c.H, (n + 1) * c.H).every((v) => v === 0), `row ${n}`).toBe(true);
      }
    });
  }

  it('the forward alone (evaluation) gives the one-pass loss and lse; its backward is refused', async () => {
    const c: Case = { N: 21, H: 10, V: 90, hidden: randArray(21 * 10, 81, 1), lmHead: growingHead(90, 10, 82), targets: randomTargets(21, 90, 83) };
    const invCount = 1 / countOf(c.targets, c.V);
    const trained = await runFused(gpu, c, 'f32', invCount, 16);
    const loss = gpu.storage(4);
    const prog = new Program(gpu);
    const f = recordCrossEntropyForward(prog, {
      hidden: gpu.upload(c.hidden), lmHead: matrixFromF32(gpu, c.lmHead, c.V, c.H, 'f32'), targets: gpu.upload(c.targets), N: c.N,
      invCount: gpu.upload(new Float32Array([invCount])), loss, chunk: 16,
    });
    expect(f.gradSum).toBeUndefined();
    expect(() => recordCrossEntropyBackward(prog, f, gpu.storage(c.N * c.H * 4))).toThrow(/without its backward/);
    prog.run();
    expect(Math.abs((await gpu.readF32(loss, 1))[0]! - trained.loss) / trained.loss).toBeLessThan(1e-6);
    expect(maxAbsDiff(await gpu.readF32(f.lse, c.N), trained.lse)).toBeLessThan(1e-5);
  });

  it('replays without re-recording: results are overwritten, and a new invCount takes effect', async () => {
    const N = 19, H = 8, V = 70;
    const targets = randomTargets(N, V, 21);
    const hidden = randArray(N * H, 22);
    const lmHeadValues = randArray(V * H, 23);
    const invCount = gpu.upload(new Float32Array([1]));
    const loss = gpu.storage(4);
    const dHidden = gpu.storage(N * H * 4);
    const prog = new Program(gpu);
    recordCrossEntropy(prog, {
      hidden: gpu.upload(hidden), lmHead: matrixFromF32(gpu, lmHeadValues, V, H, 'f32'), targets: gpu.upload(targets),
      N, invCount, loss, dHidden, chunk: 16,
    });
    const ref = crossEntropyHiddenRef(hidden, lmHeadValues, targets, N, V, H, 0.25);
    for (let step = 0; step < 2; step++) {
      gpu.write(invCount, new Float32Array([0.25]));
      prog.run();
      expect(Math.abs((await gpu.readF32(loss, 1))[0]! - ref.loss) / ref.loss).toBeLessThan(1e-5);
      expect(maxAbsDiff(await gpu.readF32(dHidden, N * H), ref.dHidden)).toBeLessThan(1e-5);
    }
  });

  it('computes full logits for a small vocabulary', async () => {
    const N = 5, H = 12, V = 33;
    const hidden = randArray(N * H, 31);
    const w = randArray(V * H, 32);
    const logits = gpu.storage(N * V * 4);
    const prog = new Program(gpu);
    recordLogits(prog, { hidden: gpu.upload(hidden), lmHead: matrixFromF32(gpu, w, V, H, 'f32'), logits, N });
    prog.run();
    expect(maxAbsDiff(await gpu.readF32(logits, N * V), matmulRef(hidden, w, N, V, H))).toBeLessThan(1e-5);
  });

  it('reproduces the fixture loss from the final hidden states and the tied embedding (tiny-tied)', async () => {
    const dir = `${FIXTURES}/tiny-tied`;
    const t = readSafetensors(`${dir}/case.safetensors`);
    const m = readSafetensors(`${dir}/model/model.safetensors`);
    const [B, T, H] = t.shape('base_hidden.2');
    const [V] = m.shape('model.embed_tokens.weight');
    const c: Case = {
      N: B! * T!, H: H!, V: V!,
      hidden: t.f32('base_hidden.2'),
      lmHead: m.f32('model.embed_tokens.weight'),
      targets: shiftLabels(t.i32('labels'), B!, T!),
    };
    const got = await runFused(gpu, c, 'f32', 1 / countOf(c.targets, c.V), 100);
    expect(Math.abs(got.loss - t.f32('base_loss')[0]!)).toBeLessThan(1e-5);
  });
});

describe('fused cross-entropy with the lm head split into parts', () => {
  let gpu: Gpu;
  // 8 KiB bindings: an f32 lm head of width 24 splits every 85 rows, across the 50-row chunks.
  beforeAll(async () => { gpu = await testGpu({ maxBindingBytes: 8192 }); });
  afterAll(() => gpu?.destroy());

  for (const [dtype, chunk] of [['f32', 50], ['bf16', 50], ['f32', undefined]] as const) {
    it(`matches the reference (${dtype}, chunk ${chunk ?? 'default'})`, async () => {
      const c: Case = {
        N: 37, H: 24, V: 203,
        hidden: randArray(37 * 24, 41, 1),
        lmHead: randArray(203 * 24, 42, 0.5),
        targets: randomTargets(37, 203, 43),
      };
      const invCount = 1 / countOf(c.targets, c.V);
      const ref = crossEntropyHiddenRef(c.hidden, asStored(c.lmHead, dtype), c.targets, c.N, c.V, c.H, invCount);
      const got = await runFused(gpu, c, dtype, invCount, chunk);
      expect(Math.abs(got.loss - ref.loss) / ref.loss).toBeLessThan(1e-5);
      expect(maxAbsDiff(got.dHidden, ref.dHidden)).toBeLessThan(1e-5);
    });
  }
});

/** targets[b*T + t] = labels[b, t+1]; the last position of each row has no next label. */
function shiftLabels(labels: Int32Array, B: number, T: number): Int32Array {
  return Int32Array.from({ length: B * T }, (_, i) => (i % T === T - 1 ? -100 : labels[i + 1]!));
}

/** Minimal safetensors reader for the fixture checks: u64 LE header length, JSON header, raw little-endian data. */
function readSafetensors(path: string) {
  const bytes = readFileSync(path);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const raw = (name: string, dtype: string): ArrayBuffer => {
    const e = header[name];
    if (!e || e.dtype !== dtype) throw new Error(`${path}: no ${dtype} tensor ${name}`);
    const start = 8 + headerLen + e.data_offsets[0];
    return bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + 8 + headerLen + e.data_offsets[1]);
  };
  return {
    shape: (name: string) => header[name]!.shape,
    f32: (name: string) => new Float32Array(raw(name, 'F32')),
    i32: (name: string) => new Int32Array(raw(name, 'I32')),
  };
}
