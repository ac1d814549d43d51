// Encoded samples to fixed-shape batches for the GPU graph: rows (one sample, or several packed), padding,
// shifted targets, positions and segment ids; plus the seeded epoch order and the train/validation split.
//
// Facts followed (LLaMA-Factory processor/supervised.py, collator.py, processor_utils.greedy_knapsack):
// - packing groups samples into rows with a greedy knapsack (largest sample that still fits, repeatedly).
//   Without neat_packing attention crosses samples and positions run on through the row; with neat_packing each
//   sample gets its own segment (block-diagonal attention) and positions restart at 0.
// - The loss predicts labels[t+1] from token t. LLaMA-Factory does not mask across packed samples; with
//   neat_packing a sample cannot see the one before it, so the prediction of its first token from the previous
//   sample's last token is meaningless and is not counted here (segment change = no target). Without
//   neat_packing it is counted as in LLaMA-Factory (it matters only with train_on_prompt: the first label of a
//   sample is a prompt token, -100 otherwise).
import { UserError } from '../errors.js';
import { seededRandom } from '../random.js';
import { IGNORE_INDEX, type EncodedSample } from './template.js';

export interface Batch {
  B: number;
  T: number;
  /** [B*T] token ids, pad id past each row's end. */
  inputIds: Uint32Array;
  /** [B*T] already shifted by one: targets[b*T+t] = labels[b][t+1]; -100 past the end and across segments. */
  targets: Int32Array;
  /** [B*T] RoPE positions. */
  positions: Uint32Array;
  /** [B*T] attention segments: a token sees earlier tokens of its row with the same segment. Padding is 0. */
  segments: Uint32Array;
  /** Targets that count in the loss (not -100). */
  countedTokens: number;
  /** kto (prepare.ts): u32 [B/2], 1 where example j (row j) is desirable. */
  desirable?: Uint32Array;
}

/** One batch row before padding: real tokens only. */
export interface Row {
  inputIds: number[];
  labels: number[];
  positions: number[];
  /** >= 1 for real tokens; PAD_SEGMENT is reserved for padding. */
  segments: number[];
}

export const PAD_SEGMENT = 0;

/** A row holding one sample. */
export function sampleRow(s: EncodedSample): Row {
  return { inputIds: s.inputIds, labels: s.labels, positions: s.inputIds.map((_, i) => i), segments: s.inputIds.map(() => 1) };
}

/**
 * Fenwick tree over sample lengths 1..cutoffLen counting the samples not yet packed, to find the longest one that
 * fits a remaining capacity in O(log cutoffLen) (a sorted list with removals would be quadratic on big datasets).
 */
class LengthCounts {
  private readonly tree: Int32Array;
  private readonly highBit: number;

  constructor(private readonly size: number) {
    this.tree = new Int32Array(size + 1);
    this.highBit = size > 0 ? 2 ** Math.floor(Math.log2(size)) : 0;
  }

  add(length: number, delta: number): void {
    for (let i = length; i <= this.size; i += i & -i) this.tree[i]! += delta;
  }

  private prefix(length: number): number {
    let sum = 0;
    for (let i = length; i > 0; i -= i & -i) sum += this.tree[i]!;
    return sum;
  }

  /** The largest available length <= capacity, or 0 if none. */
  largestAtMost(capacity: number): number {
    const target = this.prefix(Math.min(capacity, this.size));
    if (target === 0) return 0;
    // Smallest index whose prefix count reaches `target`: the last counted length <= capacity.
    let index = 0;
    let remaining = target;
    for (let step = this.highBit; step > 0; step >>= 1) {
      const next = index + step;
      if (next <= this.size && this.tree[next]! < remaining) {
        index = next;
        remaining -= this.tree[next]!;
      }
    }
    return index + 1;
  }
}

/**
 * Packs samples into rows of at most rowLen tokens, greedily (largest fitting sample first, as LLaMA-Factory's
 * greedy_knapsack). Empty samples are dropped. Samples of equal length are taken in dataset order.
 */
export function packRows(samples: EncodedSample[], rowLen: number, neat: boolean): Row[] {
  const byLength = new Map<number, number[]>();
  const counts = new LengthCounts(rowLen);
  samples.forEach((s, i) => {
    const n = s.inputIds.length;
    if (n > rowLen) throw new Error(`sample ${i} has ${n} tokens, more than the row length ${rowLen}`);
    if (n === 0) return;
    const list = byLength.get(n);
    if (list) list.push(i);
    else byLength.set(n, [i]);
    counts.add(n, 1);
  });
  for (const list of byLength.values()) list.reverse(); // pop() then yields dataset order
  const rows: Row[] = [];
  for (let first = counts.largestAtMost(rowLen); first > 0; first = counts.largestAtMost(rowLen)) {
    const row: Row = { inputIds: [], labels: [], positions: [], segments: [] };
    let segment = 1;
    for (let n = first; n > 0; n = counts.largestAtMost(rowLen - row.inputIds.length)) {
      const sample = samples[byLength.get(n)!.pop()!]!;
      counts.add(n, -1);
      const start = row.inputIds.length;
      for (let i = 0; i < n; i++) {
        row.inputIds.push(sample.inputIds[i]!);
        row.labels.push(sample.labels[i]!);
        row.positions.push(neat ? i : start + i);
        row.segments.push(segment);
      }
      if (neat) segment++;
    }
    rows.push(row);
  }
  return rows;
}

export interface CollateOptions {
  padId: number;
  /** Upper bound of T. */
  cutoffLen: number;
  /** Fixed T (>= every row); default: the longest row rounded up to a multiple of 8, at most cutoffLen. */
  T?: number;
  /** Fixed B (>= rows.length): missing rows are all padding. Default rows.length. */
  B?: number;
}

/** Pads rows into one batch and shifts the labels into targets. */
export function collate(rows: Row[], o: CollateOptions): Batch {
  const longest = rows.reduce((m, r) => Math.max(m, r.inputIds.length), 0);
  if (longest > o.cutoffLen) throw new Error(`a row has ${longest} tokens, more than cutoffLen ${o.cutoffLen}`);
  const T = o.T ?? Math.max(1, Math.min(Math.ceil(longest / 8) * 8, o.cutoffLen));
  const B = o.B ?? rows.length;
  if (longest > T) throw new Error(`a row has ${longest} tokens, more than T ${T}`);
  if (B < rows.length || B < 1) throw new Error(`B ${B} must be >= the ${rows.length} rows and >= 1`);
  const inputIds = new Uint32Array(B * T).fill(o.padId);
  const targets = new Int32Array(B * T).fill(IGNORE_INDEX);
  const positions = new Uint32Array(B * T);
  const segments = new Uint32Array(B * T).fill(PAD_SEGMENT);
  let countedTokens = 0;
  rows.forEach((row, b) => {
    const n = row.inputIds.length;
    const base = b * T;
    for (let t = 0; t < n; t++) {
      inputIds[base + t] = row.inputIds[t]!;
      positions[base + t] = row.positions[t]!;
      segments[base + t] = row.segments[t]!;
      if (t + 1 < n && row.segments[t + 1] === row.segments[t] && row.labels[t + 1] !== IGNORE_INDEX) {
        targets[base + t] = row.labels[t + 1]!;
        countedTokens++;
      }
    }
  });
  return { B, T, inputIds, targets, positions, segments, countedTokens };
}

/** A random permutation of 0..n-1 from (seed, salt): Fisher-Yates. */
function permutation(n: number, seed: number, salt: number): number[] {
  const random = seededRandom(Math.imul(seed >>> 0, 0x27d4eb2d) ^ Math.imul(salt + 1, 0x165667b1));
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** The order in which rows are visited in an epoch: a permutation that depends only on (n, seed, epoch). */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  return permutation(n, seed, epoch);
}

/** Salt of the validation split, apart from the epoch salts (epochs count up from 0). */
const SPLIT_SALT = -2;

/**
 * Splits items into train and validation sets as LLaMA-Factory's val_size: a fraction in (0, 1) takes
 * ceil(fraction * n) items (as HF datasets' train_test_split), a value > 1 is a count. The choice is seeded.
 */
export function splitTrainVal<T>(items: T[], valSize: number, seed: number): { train: T[]; val: T[] } {
  if (valSize === 0) return { train: items.slice(), val: [] };
  if (!(valSize > 0) || valSize === 1) throw new UserError(`val_size must be a fraction in (0, 1) or a count > 1, got ${valSize}`);
  const valCount = valSize < 1 ? Math.ceil(valSize * items.length) : Math.floor(valSize);
  if (valCount >= items.length) {
    throw new UserError(`val_size ${valSize} leaves no training samples out of ${items.length}`);
  }
  const order = permutation(items.length, seed, SPLIT_SALT);
  const valIndices = order.slice(0, valCount).sort((a, b) => a - b);
  const isVal = new Uint8Array(items.length);
  for (const i of valIndices) isVal[i] = 1;
  return { train: items.filter((_, i) => !isVal[i]), val: valIndices.map((i) => items[i]!) };
}
