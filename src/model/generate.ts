// Text generation with a KV cache: prefill the prompt once, then one token per step through a graph recorded
// once; greedy or sampled (temperature, top-k, top-p), stopping at an end-of-sequence token.
import type { Gpu } from '../gpu/device.js';
import type { ModelConfig } from './config.js';
import type { ModelWeights } from './weights.js';
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

/**
 * One conversation's decoder: the KV cache, and the one-token graph recorded once; each generated token writes only
 * its id, position and the cache row (uniforms). A prompt is prefilled by a graph of its length.
 */
export class Generator {
  private readonly cache: KvCache;
  private readonly decode: Qwen3Graph;

  constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly lora: LoraWeights | undefined,
    readonly maxLen: number,
  ) {
    const rowBytes = config.numKvHeads * config.headDim * 4;
    const alloc = () => Array.from({ length: config.numLayers }, () => gpu.storage(maxLen * rowBytes, 'kv-cache'));
    this.cache = { k: alloc(), v: alloc(), segments: gpu.storage(maxLen * 4, 'kv-segments'), maxLen, start: 0 };
    this.decode = this.graph(1);
  }

  private graph(T: number): Qwen3Graph {
    return new Qwen3Graph(this.gpu, this.config, this.weights, { B: 1, T, mode: 'logits', lora: this.lora, cache: this.cache });
  }

  /** Run `graph` on `tokens` at cache row `start`; the logits of its last token. */
  private async run(graph: Qwen3Graph, tokens: number[], start: number): Promise<Float32Array> {
    const T = tokens.length;
    graph.setCacheStart(start);
    graph.setBatch({
      inputIds: Uint32Array.from(tokens),
      positions: Uint32Array.from(tokens, (_, i) => start + i),
      segments: new Uint32Array(T),
    });
    graph.forward.run();
    const V = this.config.vocabSize;
    return await this.gpu.readF32(graph.logits, V, (T - 1) * V);
  }

  /** Yields generated token ids until a stop id (not yielded), maxNewTokens, or the cache is full. */
  async *generate(prompt: number[], o: SamplingOptions): AsyncGenerator<number> {
    if (prompt.length === 0) throw new Error('empty prompt');
    if (prompt.length >= this.maxLen) throw new Error(`prompt of ${prompt.length} tokens does not fit the ${this.maxLen}-token cache`);
    const rand = seededRandom(o.seed);
    const prefill = this.graph(prompt.length);
    let logits: Float32Array;
    try {
      logits = await this.run(prefill, prompt, 0);
    } finally {
      prefill.destroy();
    }
    let pos = prompt.length;
    for (let n = 0; n < o.maxNewTokens && pos < this.maxLen; n++) {
      const next = sampleToken(logits, o, rand);
      if (o.stopIds.includes(next)) return;
      yield next;
      logits = await this.run(this.decode, [next], pos);
      pos++;
    }
  }

  destroy(): void {
    this.decode.destroy();
    for (const b of [...this.cache.k, ...this.cache.v, this.cache.segments]) this.gpu.release(b);
  }
}
