// Text generation with a KV cache: prefill the prompt once, then one token per step; greedy or sampled
// (temperature, top-k, top-p), stopping at an end-of-sequence token.
import type { Gpu } from '../gpu/device.js';
import type { Qwen3Config } from './config.js';
import type { Qwen3Weights } from './weights.js';
import { Qwen3Graph, type KvCache } from './qwen3.js';
import type { LoraWeights } from '../train/lora.js';
import { seededRandom } from '../random.js';

export interface SamplingOptions {
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** 0 = no limit. */
  topK: number;
  /** 1 = no nucleus cut. */
  topP: number;
  seed: number;
  stopIds: number[];
}

export const DEFAULT_SAMPLING: SamplingOptions = { maxNewTokens: 256, temperature: 0.7, topK: 20, topP: 0.8, seed: 0, stopIds: [] };

/** Pick the next token from one position's logits. */
export function sampleToken(logits: Float32Array, o: Pick<SamplingOptions, 'temperature' | 'topK' | 'topP'>, rand: () => number): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (o.temperature <= 0) return best;
  const order = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!);
  const k = o.topK > 0 ? Math.min(o.topK, order.length) : order.length;
  const probs: number[] = [];
  let sum = 0;
  for (let i = 0; i < k; i++) {
    const p = Math.exp((logits[order[i]!]! - logits[best]!) / o.temperature);
    probs.push(p);
    sum += p;
  }
  // Nucleus: keep the smallest prefix whose mass reaches top_p.
  let kept = 0;
  let mass = 0;
  while (kept < probs.length && (kept === 0 || mass < o.topP * sum)) mass += probs[kept++]!;
  let u = rand() * mass;
  for (let i = 0; i < kept; i++) {
    u -= probs[i]!;
    if (u <= 0) return order[i]!;
  }
  return order[kept - 1]!;
}

export class Generator {
  private readonly cache: KvCache;

  constructor(
    readonly gpu: Gpu,
    readonly config: Qwen3Config,
    readonly weights: Qwen3Weights,
    readonly lora: LoraWeights | undefined,
    readonly maxLen: number,
  ) {
    const rowBytes = config.numKvHeads * config.headDim * 4;
    const alloc = () => Array.from({ length: config.numLayers }, () => gpu.storage(maxLen * rowBytes, 'kv-cache'));
    this.cache = { k: alloc(), v: alloc(), segments: gpu.storage(maxLen * 4, 'kv-segments'), start: 0 };
  }

  /** Logits of the last of `tokens`, which continue the cached sequence at position `start`. */
  private async step(tokens: number[], start: number): Promise<Float32Array> {
    const T = tokens.length;
    const graph = new Qwen3Graph(this.gpu, this.config, this.weights, { B: 1, T, mode: 'logits', lora: this.lora, cache: { ...this.cache, start } });
    try {
      graph.setBatch({
        inputIds: Uint32Array.from(tokens),
        positions: Uint32Array.from(tokens, (_, i) => start + i),
        segments: new Uint32Array(T),
      });
      graph.program.run();
      const V = this.config.vocabSize;
      return await this.gpu.readF32(graph.logits!, V, (T - 1) * V);
    } finally {
      graph.destroy();
    }
  }

  /** Yields generated token ids until a stop id (not yielded), maxNewTokens, or the cache is full. */
  async *generate(prompt: number[], o: SamplingOptions): AsyncGenerator<number> {
    if (prompt.length === 0) throw new Error('empty prompt');
    if (prompt.length >= this.maxLen) throw new Error(`prompt of ${prompt.length} tokens does not fit the ${this.maxLen}-token cache`);
    const rand = seededRandom(o.seed);
    let logits = await this.step(prompt, 0);
    let pos = prompt.length;
    for (let n = 0; n < o.maxNewTokens && pos < this.maxLen; n++) {
      const next = sampleToken(logits, o, rand);
      if (o.stopIds.includes(next)) return;
      yield next;
      logits = await this.step([next], pos);
      pos++;
    }
  }

  destroy(): void {
    for (const b of [...this.cache.k, ...this.cache.v, this.cache.segments]) this.gpu.release(b);
  }
}
