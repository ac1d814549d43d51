import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { PAD_SEGMENT, collate, epochOrder, packRows, sampleRow, splitTrainVal } from '../src/train/batch.js';
import { IGNORE_INDEX, type EncodedSample } from '../src/train/template.js';

const I = IGNORE_INDEX;
const PAD = 99;

/** A sample of n tokens with ids base, base+1, ...; the first `prompt` labels masked. */
function sample(base: number, n: number, prompt: number): EncodedSample {
  const inputIds = Array.from({ length: n }, (_, i) => base + i);
  return { inputIds, labels: inputIds.map((id, i) => (i < prompt ? I : id)) };
}

describe('collate', () => {
  it('pads to the longest row rounded up to 8, shifts labels into targets, pads with segment 0', () => {
    const a = sample(10, 5, 2); // ids 10..14, labels I I 12 13 14
    const b = sample(20, 11, 0);
    const batch = collate([sampleRow(a), sampleRow(b)], { padId: PAD, cutoffLen: 64 });
    expect([batch.B, batch.T]).toEqual([2, 16]);
    const row0 = (arr: ArrayLike<number>) => Array.from(arr).slice(0, 16);
    expect(row0(batch.inputIds)).toEqual([10, 11, 12, 13, 14, ...Array(11).fill(PAD)]);
    // targets[t] = labels[t+1]: token 11 predicts 12, ..., the last real token predicts nothing.
    expect(row0(batch.targets)).toEqual([I, 12, 13, 14, ...Array(12).fill(I)]);
    expect(row0(batch.positions)).toEqual([0, 1, 2, 3, 4, ...Array(11).fill(0)]);
    expect(row0(batch.segments)).toEqual([1, 1, 1, 1, 1, ...Array(11).fill(PAD_SEGMENT)]);
    expect(Array.from(batch.targets).slice(16, 32)).toEqual([...b.inputIds.slice(1), ...Array(6).fill(I)]);
    expect(batch.countedTokens).toBe(3 + 10);
  });

  it('T is capped by cutoff_len, can be fixed, and B can be padded with empty rows', () => {
    expect(collate([sampleRow(sample(0, 10, 0))], { padId: PAD, cutoffLen: 10 }).T).toBe(10);
    const fixed = collate([sampleRow(sample(0, 3, 0))], { padId: PAD, cutoffLen: 64, T: 5, B: 2 });
    expect([fixed.B, fixed.T]).toEqual([2, 5]);
    expect(Array.from(fixed.inputIds).slice(5)).toEqual(Array(5).fill(PAD));
    expect(Array.from(fixed.targets).slice(5)).toEqual(Array(5).fill(I));
    expect(Array.from(fixed.segments).slice(5)).toEqual(Array(5).fill(PAD_SEGMENT));
    expect(fixed.countedTokens).toBe(2);
    expect(() => collate([sampleRow(sample(0, 6, 0))], { padId: PAD, cutoffLen: 64, T: 5 })).toThrow(/more than T 5/);
  });
});

describe('packing', () => {
  const samples = [sample(100, 6, 2), sample(200, 3, 1), sample(300, 5, 0), sample(400, 2, 1)];

  it('packs greedily, largest fitting sample first; positions run on and one segment (attention crosses)', () => {
    const rows = packRows(samples, 8, false);
    // Largest (6) + largest that fits 2 (the 2) = 8; then 5 + 3 = 8.
    expect(rows.map((r) => r.inputIds)).toEqual([
      [...samples[0]!.inputIds, ...samples[3]!.inputIds],
      [...samples[2]!.inputIds, ...samples[1]!.inputIds],
    ]);
    expect(rows[0]!.positions).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(rows[0]!.segments).toEqual(Array(8).fill(1));
    const batch = collate(rows, { padId: PAD, cutoffLen: 8 });
    // As LLaMA-Factory: the last token of sample 1 predicts the first label of sample 2 (masked here: a prompt token).
    expect(Array.from(batch.targets).slice(0, 8)).toEqual([I, 102, 103, 104, 105, I, 401, I]);
  });

  it('neat_packing: positions restart, each sample has its own segment, no target across samples', () => {
    const trainAll = samples.map((s) => ({ inputIds: s.inputIds, labels: s.inputIds }));
    const rows = packRows(trainAll, 8, true);
    expect(rows[0]!.positions).toEqual([0, 1, 2, 3, 4, 5, 0, 1]);
    expect(rows[0]!.segments).toEqual([1, 1, 1, 1, 1, 1, 2, 2]);
    const batch = collate(rows, { padId: PAD, cutoffLen: 8 });
    // Token 105 (end of sample 1) must not predict 400 (start of sample 2), even with every label trained.
    expect(Array.from(batch.targets).slice(0, 8)).toEqual([101, 102, 103, 104, 105, I, 401, I]);
    expect(batch.countedTokens).toBe(trainAll.reduce((n, s) => n + s.inputIds.length - 1, 0));
    // Without neat packing the same rows count the cross-sample prediction.
    const plain = collate(packRows(trainAll, 8, false), { padId: PAD, cutoffLen: 8 });
    expect(Array.from(plain.targets)[5]).toBe(400);
  });

  it('every token lands in exactly one row, no row overflows, rows are nearly full (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 24 }), { maxLength: 60 }), fc.integer({ min: 24, max: 40 }), (lengths, rowLen) => {
        const input = lengths.map((n, i) => sample(i * 1000, n, 0));
        const rows = packRows(input, rowLen, true);
        const seen = rows.flatMap((r) => r.inputIds).sort((a, b) => a - b);
        const expected = input.flatMap((s) => s.inputIds).sort((a, b) => a - b);
        expect(seen).toEqual(expected);
        for (const r of rows) expect(r.inputIds.length).toBeLessThanOrEqual(rowLen);
        // Greedy largest-first: a row is closed only when no remaining sample fits, so any two rows exceed rowLen together.
        const sizes = rows.map((r) => r.inputIds.length);
        for (let i = 0; i + 1 < sizes.length; i++) expect(sizes[i]! + Math.min(...sizes.slice(i + 1))).toBeGreaterThan(rowLen);
      }),
    );
  });

  it('a sample longer than the row is a bug, not a silent drop', () => {
    expect(() => packRows([sample(0, 9, 0)], 8, false)).toThrow(/more than the row length 8/);
  });
});

describe('epochOrder', () => {
  it('is a permutation, the same for the same (seed, epoch), different across epochs and seeds', () => {
    const a = epochOrder(50, 42, 0);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(epochOrder(50, 42, 0)).toEqual(a);
    expect(epochOrder(50, 42, 1)).not.toEqual(a);
    expect(epochOrder(50, 43, 0)).not.toEqual(a);
    expect(epochOrder(0, 1, 0)).toEqual([]);
  });

  it('moves every index around evenly over many seeds', () => {
    const n = 5;
    const firstCounts = new Array<number>(n).fill(0);
    for (let seed = 0; seed < 5000; seed++) firstCounts[epochOrder(n, seed, 0)[0]!]!++;
    for (const c of firstCounts) expect(Math.abs(c - 1000)).toBeLessThan(120);
  });
});

describe('splitTrainVal', () => {
  const items = Array.from({ length: 20 }, (_, i) => i);

  it('a fraction takes ceil(fraction * n), a count takes that many; seeded; train keeps its order', () => {
    const { train, val } = splitTrainVal(items, 0.12, 42);
    expect(val).toHaveLength(3);
    expect(train).toHaveLength(17);
    expect([...train, ...val].sort((a, b) => a - b)).toEqual(items);
    expect(train).toEqual([...train].sort((a, b) => a - b));
    expect(splitTrainVal(items, 0.12, 42)).toEqual({ train, val });
    expect(splitTrainVal(items, 0.12, 7).val).not.toEqual(val);
    expect(splitTrainVal(items, 5, 42).val).toHaveLength(5);
    expect(splitTrainVal(items, 0, 42)).toEqual({ train: items, val: [] });
  });

  it('rejects a split that leaves nothing to train on, and val_size 1', () => {
    expect(() => splitTrainVal(items, 20, 1)).toThrow(UserError);
    expect(() => splitTrainVal(items, 1, 1)).toThrow(/val_size must be a fraction/);
  });
});
