// Text generation with a KV cache: prefill the prompt once, then one token per step through a graph recorded
// once; greedy or sampled (temperature, top-k, top-p), stopping at an end-of-sequence token.
import type { Gpu } from '../gpu/device.js';
import type { ModelConfig } from './config.js';
import type { ModelWeights } from './weights.js';
import { Qwen3Graph, type KvCache } from './qwen3.js';
import type { LoraWeights } from './lora-adapter.js';
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

/** Prompt tokens per prefill step: the prefill graph's length (its logits are [chunk, vocab]). */
export const PREFILL_CHUNK = 64;

/**
 * One conversation's decoder: the KV cache and two graphs recorded once, a prefill graph of `prefillChunk` tokens
 * and a one-token graph. A prompt runs through the prefill graph chunk by chunk (the last chunk padded: its padding
 * only writes cache rows past the prompt, which the tokens that follow overwrite before anything attends to them),
 * then each token through the one-token graph. Between runs only inputs and uniforms are written: the ids,
 * positions and the cache row.
 */
export class Generator {
  private readonly cache: KvCache;
  private readonly prefill: Qwen3Graph;
  private readonly decode: Qwen3Graph;
  readonly prefillChunk: number;

  constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly lora: LoraWeights | undefined,
    readonly maxLen: number,
    prefillChunk = PREFILL_CHUNK,
  ) {
    this.prefillChunk = Math.max(1, Math.min(prefillChunk, maxLen));
    // Room for a padded last chunk that starts just before maxLen.
    const rows = maxLen + this.prefillChunk - 1;
    const rowBytes = config.numKvHeads * config.headDim * 4;
    const alloc = () => Array.from({ length: config.numLayers }, () => gpu.storage(rows * rowBytes, 'kv-cache'));
    this.cache = { k: alloc(), v: alloc(), segments: gpu.storage(rows * 4, 'kv-segments'), maxLen: rows, start: 0 };
    this.prefill = this.graph(this.prefillChunk);
    this.decode = this.graph(1);
  }

  private graph(T: number): Qwen3Graph {
    return new Qwen3Graph(this.gpu, this.config, this.weights, { B: 1, T, mode: 'logits', lora: this.lora, cache: this.cache });
  }

  /** Run `graph` on `tokens` (padded to its length) at cache row `start`. */
  private run(graph: Qwen3Graph, tokens: number[], start: number): void {
    const T = graph.opts.T;
    const ids = new Uint32Array(T);
    ids.set(tokens);
    graph.setCacheStart(start);
    graph.setBatch({ inputIds: ids, positions: Uint32Array.from(ids, (_, i) => start + i), segments: new Uint32Array(T) });
    graph.forward.run();
  }

  /** The logits of token `index` of the graph's last run. */
  private logitsOf(graph: Qwen3Graph, index: number): Promise<Float32Array> {
    const V = this.config.vocabSize;
    return this.gpu.readF32(graph.logits, V, index * V);
  }

  /** Yields generated token ids until a stop id (not yielded), maxNewTokens, or the cache is full. */
  async *generate(prompt: number[], o: SamplingOptions): AsyncGenerator<number> {
    if (prompt.length === 0) throw new Error('empty prompt');
    if (prompt.length >= this.maxLen) throw new Error(`prompt of ${prompt.length} tokens does not fit the ${this.maxLen}-token cache`);
    const rand = seededRandom(o.seed);
    const C = this.prefillChunk;
    let start = 0;
    for (; start + C < prompt.length; start += C) this.run(this.prefill, prompt.slice(start, start + C), start);
    this.run(this.prefill, prompt.slice(start), start);
    // Only the prompt's last token's logits are read back.
    let logits = await this.logitsOf(this.prefill, prompt.length - 1 - start);
    let pos = prompt.length;
    for (let n = 0; n < o.maxNewTokens && pos < this.maxLen; n++) {
      const next = sampleToken(logits, o, rand);
      if (o.stopIds.includes(next)) return;
      yield next;
      this.run(this.decode, [next], pos);
      logits = await this.logitsOf(this.decode, 0);
      pos++;
    }
  }

  destroy(): void {
    this.prefill.destroy();
    this.decode.destroy();
    for (const b of [...this.cache.k, ...this.cache.v, this.cache.segments]) this.gpu.release(b);
  }
}
