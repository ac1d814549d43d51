// Generation: KV-cache decoding equals greedy decoding by full recomputation (fixture model, with and without its
// adapter, and an odd-shaped random model); sampleToken's greedy, top-k, top-p and temperature rules and seeded
// reproducibility; and the chat CLI answering a prompt.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import { loadModelConfig, type ModelConfig } from '../src/model/config.js';
import { Checkpoint } from '../src/model/safetensors.js';
import { loadModelWeights, releaseModelWeights, type ModelWeights } from '../src/model/weights.js';
import { plainBatch, Qwen3Graph } from '../src/model/qwen3.js';
import { Generator, sampleToken, type SamplingOptions } from '../src/model/generate.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { loadPeftAdapter, releaseLora, type LoraWeights } from '../src/train/lora.js';
import { seededRandom } from '../src/random.js';
import { testGpu } from './helpers.js';
import { randomQwen3Tensors, writeQwen3Folder } from './model-reference.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const FIXTURE = path.resolve(ROOT, '../shared/fixtures/qwen3/tiny-tied');
const MODEL_DIR = path.join(FIXTURE, 'model');
const GREEDY: SamplingOptions = { maxNewTokens: 8, temperature: 0, topK: 0, topP: 1, seed: 0, stopIds: [] };

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

let gpu: Gpu;
let tmp: string;
beforeAll(async () => {
  gpu = await testGpu();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'loraforge-generate-'));
});
afterAll(() => {
  gpu?.destroy();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function loadModel(dir: string): { config: ModelConfig; weights: ModelWeights } {
  const config = loadModelConfig(dir);
  const ckpt = Checkpoint.open(dir);
  try {
    return { config, weights: loadModelWeights(gpu, ckpt, config, 'f32') };
  } finally {
    ckpt.close();
  }
}

async function generateAll(gen: Generator, prompt: number[], o: SamplingOptions): Promise<number[]> {
  const out: number[] = [];
  for await (const id of gen.generate(prompt, o)) out.push(id);
  return out;
}

/** Greedy decoding without a cache: the 'logits' graph over the whole sequence for every new token. */
async function greedyByRecomputation(c: ModelConfig, w: ModelWeights, lora: LoraWeights | undefined, prompt: number[], count: number): Promise<number[]> {
  const seq = [...prompt];
  for (let i = 0; i < count; i++) {
    const T = seq.length;
    const g = new Qwen3Graph(gpu, c, w, { B: 1, T, mode: 'logits', lora });
    g.setBatch(plainBatch(seq, 1, T));
    g.program.run();
    seq.push(argmax(await gpu.readF32(g.logits!, c.vocabSize, (T - 1) * c.vocabSize)));
    g.destroy();
  }
  return seq.slice(prompt.length);
}

describe('KV-cache generation equals greedy decoding by recomputation', () => {
  const prompt = [5, 300, 17, 42, 99, 256];

  it('fixture tiny-tied, without and with its adapter', async () => {
    const { config, weights } = loadModel(MODEL_DIR);
    const lora = loadPeftAdapter(gpu, path.join(FIXTURE, 'adapter'), config);
    try {
      for (const adapter of [undefined, lora]) {
        const gen = new Generator(gpu, config, weights, adapter, 32);
        const cached = await generateAll(gen, prompt, GREEDY);
        gen.destroy();
        expect(cached).toHaveLength(GREEDY.maxNewTokens);
        expect(cached).toEqual(await greedyByRecomputation(config, weights, adapter, prompt, GREEDY.maxNewTokens));
      }
    } finally {
      releaseLora(gpu, lora);
      releaseModelWeights(gpu, weights);
    }
  });

  // Qwen2 (q/k/v biases, no Q/K norm) caches keys after its bias add and in-place RoPE.
  it.each(['qwen3', 'qwen2'] as const)('an odd-shaped random %s model (5 heads / 1 kv head, head_dim 12) whose greedy tokens vary', async (modelType) => {
    const c: ModelConfig = {
      modelType, vocabSize: 97, hiddenSize: 40, intermediateSize: 72, numLayers: 2, numHeads: 5, numKvHeads: 1, headDim: 12,
      rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 64, tieWordEmbeddings: false, bosTokenId: null, eosTokenId: null,
    };
    const dir = path.join(tmp, `random-${modelType}`);
    // Seeds whose greedy continuation does not settle on one token (see the check below).
    writeQwen3Folder(dir, c, randomQwen3Tensors(c, modelType === 'qwen3' ? 31 : 34));
    const { weights } = loadModel(dir);
    try {
      const short = [3, 50, 7];
      const gen = new Generator(gpu, c, weights, undefined, 16);
      const cached = await generateAll(gen, short, { ...GREEDY, maxNewTokens: 10 });
      expect(cached).toEqual(await greedyByRecomputation(c, weights, undefined, short, 10));
      // A test on a model that repeats one token could not tell a stale cache from a correct one.
      expect(new Set(cached).size).toBeGreaterThan(3);
      // Generation stops before a stop id, and at the end of the cache (16 - 3 = 13 new tokens at most).
      expect(await generateAll(gen, short, { ...GREEDY, maxNewTokens: 10, stopIds: [cached[4]!] })).toEqual(cached.slice(0, cached.indexOf(cached[4]!)));
      expect(await generateAll(gen, short, { ...GREEDY, maxNewTokens: 100 })).toHaveLength(13);
      gen.destroy();
    } finally {
      releaseModelWeights(gpu, weights);
    }
  });

  it('records its graphs once: no buffer, bind group or pipeline is made by prompts or tokens', async () => {
    const { config, weights } = loadModel(MODEL_DIR);
    // A prefill chunk of 4: the prompts below take one, two and three chunks.
    const gen = new Generator(gpu, config, weights, undefined, 32, 4);
    const counts = { buffers: 0, bindGroups: 0, pipelines: 0 };
    const device = gpu.device;
    const spies = [
      [gpu, 'buffer', 'buffers'], [device, 'createBindGroup', 'bindGroups'], [device, 'createComputePipeline', 'pipelines'],
    ] as const;
    const originals = spies.map(([obj, method]) => (obj as unknown as Record<string, (...a: unknown[]) => unknown>)[method]!);
    spies.forEach(([obj, method, key], i) => {
      (obj as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => { counts[key]++; return originals[i]!.apply(obj, args); };
    });
    try {
      for (const prompt of [[5, 300, 17], [5, 300, 17, 42, 99, 256], [7, 8, 9, 10, 11, 12, 13, 14, 15]]) {
        expect(await generateAll(gen, prompt, GREEDY)).toHaveLength(GREEDY.maxNewTokens);
      }
      expect(counts).toEqual({ buffers: 0, bindGroups: 0, pipelines: 0 });
    } finally {
      spies.forEach(([obj, method], i) => { (obj as unknown as Record<string, unknown>)[method] = originals[i]; });
      gen.destroy();
      releaseModelWeights(gpu, weights);
    }
  });

  it('a prompt prefilled in chunks (the last one padded) generates as one prefilled whole', async () => {
    const { config, weights } = loadModel(MODEL_DIR);
    try {
      const prompt = [5, 300, 17, 42, 99, 256, 3];
      const whole = new Generator(gpu, config, weights, undefined, 32);
      const chunked = new Generator(gpu, config, weights, undefined, 32, 3);
      expect(whole.prefillChunk).toBeGreaterThan(prompt.length);
      expect(await generateAll(chunked, prompt, GREEDY)).toEqual(await generateAll(whole, prompt, GREEDY));
      whole.destroy();
      chunked.destroy();
    } finally {
      releaseModelWeights(gpu, weights);
    }
  });

  it('sampling with a seed is reproducible, and another seed gives another sequence', async () => {
    const { config, weights } = loadModel(MODEL_DIR);
    try {
      const gen = new Generator(gpu, config, weights, undefined, 32);
      const sampled = (seed: number) => generateAll(gen, prompt, { maxNewTokens: 8, temperature: 1.5, topK: 50, topP: 0.95, seed, stopIds: [] });
      const first = await sampled(7);
      expect(await sampled(7)).toEqual(first);
      expect(await sampled(8)).not.toEqual(first);
      gen.destroy();
    } finally {
      releaseModelWeights(gpu, weights);
    }
  });
});

describe('sampleToken', () => {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at shuffled positions.
  const probs = [0.15, 0.5, 0.05, 0.3];
  const logits = Float32Array.from(probs, (p) => Math.log(p) + 3);
  const frequencies = (o: Pick<SamplingOptions, 'temperature' | 'topK' | 'topP'>, draws = 20000) => {
    const rand = seededRandom(1);
    const counts = new Array<number>(logits.length).fill(0);
    for (let i = 0; i < draws; i++) counts[sampleToken(logits, o, rand)]!++;
    return counts.map((n) => n / draws);
  };

  it('temperature 0 is greedy and draws no random number', () => {
    const noRandom = () => { throw new Error('greedy must not draw'); };
    expect(sampleToken(logits, { temperature: 0, topK: 0, topP: 1 }, noRandom)).toBe(1);
    expect(sampleToken(Float32Array.from([-3, -1, -2, -1.5]), { temperature: 0, topK: 5, topP: 0.5 }, noRandom)).toBe(1);
  });

  it('top-k 1 is greedy at any temperature and random number', () => {
    for (const u of [0, 0.3, 0.999999]) expect(sampleToken(logits, { temperature: 2, topK: 1, topP: 1 }, () => u)).toBe(1);
  });

  it('temperature 1 without cuts samples the softmax', () => {
    frequencies({ temperature: 1, topK: 0, topP: 1 }).forEach((f, i) => expect(Math.abs(f - probs[i]!)).toBeLessThan(0.015));
  });

  it('temperature divides the logits', () => {
    const t = 2;
    const weights = probs.map((p) => p ** (1 / t));
    const sum = weights.reduce((a, b) => a + b, 0);
    frequencies({ temperature: t, topK: 0, topP: 1 }).forEach((f, i) => expect(Math.abs(f - weights[i]! / sum)).toBeLessThan(0.015));
    // A low temperature all but always picks the best token.
    expect(frequencies({ temperature: 0.05, topK: 0, topP: 1 }, 2000)[1]).toBeGreaterThan(0.99);
  });

  it('top-k keeps the k most likely tokens, renormalised', () => {
    const f = frequencies({ temperature: 1, topK: 2, topP: 1 });
    expect(f[0]).toBe(0);
    expect(f[2]).toBe(0);
    expect(Math.abs(f[1]! - 0.5 / 0.8)).toBeLessThan(0.015);
  });

  it('top-p keeps the smallest set of most likely tokens whose mass reaches p', () => {
    // 0.5 < 0.6 <= 0.5 + 0.3: the two best tokens.
    const two = frequencies({ temperature: 1, topK: 0, topP: 0.6 });
    expect(two[0]).toBe(0);
    expect(two[2]).toBe(0);
    expect(Math.abs(two[3]! - 0.3 / 0.8)).toBeLessThan(0.015);
    // 0.8 < 0.9 <= 0.95: three tokens; the least likely one never appears.
    const three = frequencies({ temperature: 1, topK: 0, topP: 0.9 });
    expect(three[2]).toBe(0);
    expect(Math.abs(three[0]! - 0.15 / 0.95)).toBeLessThan(0.015);
    // p below the best token's mass keeps only it.
    expect(frequencies({ temperature: 1, topK: 0, topP: 0.3 }, 500)[1]).toBe(1);
  });

  it('the same seed draws the same tokens', () => {
    const draw = (seed: number) => {
      const rand = seededRandom(seed);
      return Array.from({ length: 50 }, () => sampleToken(logits, { temperature: 1, topK: 0, topP: 1 }, rand));
    };
    expect(draw(5)).toEqual(draw(5));
    expect(draw(5)).not.toEqual(draw(6));
  });
});

describe('chat CLI', () => {
  beforeAll(() => {
    // bin/loraforge.js runs dist/: build it from the current sources.
    try {
      execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      throw new Error(`building dist/ failed:\n${(e as { stdout?: string }).stdout ?? (e as Error).message}`);
    }
  });

  it('answers --prompt with the greedy continuation of the chat-templated prompt', async () => {
    const r = spawnSync('node', ['bin/loraforge.js', 'chat', '--model_name_or_path', MODEL_DIR, '--prompt', 'hello', '--max_new_tokens', '8', '--temperature', '0'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(1);
    // The same answer computed here: chat template, greedy decoding without a cache, decode.
    const tokenizer = await Tokenizer.load(MODEL_DIR);
    const prompt = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: 'hello' }], { addGenerationPrompt: true, enableThinking: false }));
    const { config, weights } = loadModel(MODEL_DIR);
    try {
      const stops = [tokenizer.tokenId('<|im_end|>'), tokenizer.tokenId('<|endoftext|>')];
      const ids = await greedyByRecomputation(config, weights, undefined, prompt, 8);
      const end = ids.findIndex((id) => stops.includes(id));
      expect(r.stdout).toBe(`${tokenizer.decode(end < 0 ? ids : ids.slice(0, end), true)}\n`);
    } finally {
      releaseModelWeights(gpu, weights);
    }
  });
});
