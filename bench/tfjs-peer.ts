// The JavaScript peer: the same LoRA step (Qwen3 forward with LoRA on all seven projections, next-token loss,
// gradients of the LoRA factors only, one optimizer step) written with TensorFlow.js ops on its WebGPU
// backend, on the same Dawn. Simpler than loraforge by design (see NOTES); run it in its own process, since
// tfjs makes its own WebGPU device.
import type * as TF from '@tensorflow/tfjs';
import { adapterIdentity, runInfo, type DeviceInfo } from './env.js';
import { benchConfig, randomLoraValues, randomQwen3HostWeights, randomTokens, type HostQwen3Weights } from './model.js';
import { round } from './profile.js';
import type { TrainRunFields } from './train.js';
import { PROJECTIONS, type Projection } from '../src/model/family.js';
import { peftTensorName, projectionDims } from '../src/model/families.js';
import type { ModelConfig } from '../src/model/config.js';

type Tf = typeof TF;

export interface TfjsBenchOptions {
  size: string;
  batch: number;
  seq: number;
  rank: number;
  warmup: number;
  steps: number;
}

const NOTES = [
  'the values of loraforge\'s step (bench/model.ts: weights, initial adapter, tokens) in f32; test/bench.test.ts checks both give the same loss and LoRA gradients',
  'f32 weights and math (tfjs has no bf16)',
  'tf.train.adam (tfjs has no AdamW; weight decay would be 0 here anyway), no gradient clipping',
  'no recomputation: the tape keeps every activation',
  'attention materialises the T x T scores per head (no flash attention)',
  'peak_bytes is tfjs\'s peak of live tensor bytes in one profiled step (its buffer pool can hold more)',
];

export interface TfjsBenchResult extends TrainRunFields {
  impl: 'tfjs-webgpu';
  dtype: 'f32';
  recompute: false;
  tfjs_version: string;
  notes: string[];
  device: Pick<DeviceInfo, 'vendor' | 'architecture' | 'device' | 'description' | 'software'>;
}

/** Install Dawn as navigator.gpu (tfjs looks there) and load tfjs with its WebGPU backend. */
async function loadTfjs(): Promise<{ tf: Tf; info: GPUAdapterInfo }> {
  const dawn = await import('webgpu');
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create([]);
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('no WebGPU adapter for tfjs');
  const mod = (await import('@tensorflow/tfjs')) as Tf & { default?: Tf };
  const tf = mod.default ?? mod;
  await import('@tensorflow/tfjs-backend-webgpu');
  if (!(await tf.setBackend('webgpu'))) throw new Error('tfjs could not start its webgpu backend');
  await tf.ready();
  return { tf, info: adapter.info };
}

/** What one LoRA step reads: loraforge's bench step (train.ts) given as host arrays. */
export interface TfjsStepInputs {
  config: ModelConfig;
  weights: HostQwen3Weights;
  /** A [r, in] and B [out, r] by PEFT name. */
  lora: Map<string, Float32Array>;
  rank: number;
  alpha: number;
  /** B rows of T token ids. */
  ids: Uint32Array;
  B: number;
  T: number;
}

interface TfLayer {
  norms: { input: TF.Tensor; post: TF.Tensor; q: TF.Tensor; k: TF.Tensor };
  w: Record<Projection, TF.Tensor>;
  A: Record<Projection, TF.Variable>;
  B: Record<Projection, TF.Variable>;
}

function uploadModel(tf: Tf, s: TfjsStepInputs): { embed: TF.Tensor; finalNorm: TF.Tensor; lmHead: TF.Tensor; layers: TfLayer[] } {
  const c = s.config;
  const w = s.weights;
  const embed = tf.tensor(w.embed, [c.vocabSize, c.hiddenSize]);
  const factor = (l: number, p: Projection, f: 'A' | 'B', shape: number[]) => {
    const name = peftTensorName(c, l, p, f);
    const v = s.lora.get(name);
    if (!v) throw new Error(`no values for ${name}`);
    return tf.variable(tf.tensor(v, shape), true, name);
  };
  const layers = w.layers.map((lw, l): TfLayer => {
    const layer: TfLayer = {
      norms: { input: tf.tensor(lw.inputNorm), post: tf.tensor(lw.postAttnNorm), q: tf.tensor(lw.qNorm!), k: tf.tensor(lw.kNorm!) },
      w: {} as TfLayer['w'],
      A: {} as TfLayer['A'],
      B: {} as TfLayer['B'],
    };
    for (const p of PROJECTIONS) {
      const [inDim, outDim] = projectionDims(c, p);
      layer.w[p] = tf.tensor(lw.proj[p], [outDim, inDim]);
      layer.A[p] = factor(l, p, 'A', [s.rank, inDim]);
      layer.B[p] = factor(l, p, 'B', [outDim, s.rank]);
    }
    return layer;
  });
  const lmHead = c.tieWordEmbeddings ? embed : tf.tensor(w.lmHead, [c.vocabSize, c.hiddenSize]);
  return { embed, finalNorm: tf.tensor(w.finalNorm), lmHead, layers };
}

/** HF's RoPE tables [T, headDim] for rotate-half: angle t·θ^(-2i/d), the half repeated. */
function ropeTables(tf: Tf, T: number, d: number, theta: number): { cos: TF.Tensor; sin: TF.Tensor } {
  const cos = new Float32Array(T * d);
  const sin = new Float32Array(T * d);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < d / 2; i++) {
      const a = t * theta ** (-(2 * i) / d);
      cos[t * d + i] = cos[t * d + i + d / 2] = Math.cos(a);
      sin[t * d + i] = sin[t * d + i + d / 2] = Math.sin(a);
    }
  }
  return { cos: tf.tensor(cos, [1, T, 1, d]), sin: tf.tensor(sin, [1, T, 1, d]) };
}

/** The step's loss function (mean next-token loss) over the LoRA factors, which are its trainable variables. */
function buildStep(tf: Tf, s: TfjsStepInputs): { lossFn: () => TF.Scalar; vars: TF.Variable[] } {
  const c = s.config;
  const { B, T } = s;
  const N = B * T;
  const D = c.headDim, nH = c.numHeads, nKv = c.numKvHeads;
  const scale = s.alpha / s.rank;
  const model = uploadModel(tf, s);
  const { cos, sin } = ropeTables(tf, T, D, c.ropeTheta);
  const group = nH / nKv;
  // Grouped-query attention without repeating k and v: the `group` query heads sharing a kv head are stacked
  // as group·T query rows (HF's repeat_kv gives query head h the kv head h / group), so the causal mask
  // repeats per stacked head.
  const causal = tf.tensor(Float32Array.from({ length: group * T * T }, (_, i) => (i % T <= Math.floor(i / T) % T ? 0 : -1e9)), [group * T, T]);

  // targets[n] = ids[n+1] within a row; the last position of each row is not counted.
  const targetIndex = new Int32Array(N);
  const counted = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    const last = n % T === T - 1;
    targetIndex[n] = n * c.vocabSize + (last ? 0 : s.ids[n + 1]!);
    counted[n] = last ? 0 : 1;
  }
  const idsT = tf.tensor1d(Int32Array.from(s.ids), 'int32');
  const targetT = tf.tensor1d(targetIndex, 'int32');
  const countedT = tf.tensor1d(counted);
  const countInv = 1 / (N - B);

  const rmsNorm = (x: TF.Tensor, w: TF.Tensor) => x.mul(tf.rsqrt(x.square().mean(-1, true).add(c.rmsNormEps))).mul(w);
  const rope = (x: TF.Tensor) => {
    const [x1, x2] = tf.split(x, 2, -1);
    return x.mul(cos).add(tf.concat([x2!.neg(), x1!], -1).mul(sin));
  };
  const proj = (layer: TfLayer, p: Projection, x: TF.Tensor) =>
    x.matMul(layer.w[p], false, true).add(x.matMul(layer.A[p], false, true).matMul(layer.B[p], false, true).mul(scale));
  /** [N, heads*D] -> [B, heads, T, D] after the per-head norm and RoPE (q, k) or as is (v). */
  const heads = (x: TF.Tensor, n: number, norm?: TF.Tensor) => {
    let h = x.reshape([B, T, n, D]);
    if (norm) h = rope(rmsNorm(h, norm));
    return h.transpose([0, 2, 1, 3]);
  };

  const lossFn = (): TF.Scalar => {
    let x = tf.gather(model.embed, idsT);
    for (const layer of model.layers) {
      const h = rmsNorm(x, layer.norms.input);
      const q = heads(proj(layer, 'q_proj', h), nH, layer.norms.q).reshape([B, nKv, group * T, D]);
      const k = heads(proj(layer, 'k_proj', h), nKv, layer.norms.k);
      const v = heads(proj(layer, 'v_proj', h), nKv);
      const p = tf.softmax(q.matMul(k, false, true).mul(1 / Math.sqrt(D)).add(causal));
      const attn = p.matMul(v).reshape([B, nH, T, D]).transpose([0, 2, 1, 3]).reshape([N, nH * D]);
      const x2 = x.add(proj(layer, 'o_proj', attn));
      const h2 = rmsNorm(x2, layer.norms.post);
      const gate = proj(layer, 'gate_proj', h2);
      x = x2.add(proj(layer, 'down_proj', gate.mul(tf.sigmoid(gate)).mul(proj(layer, 'up_proj', h2))));
    }
    const logits = rmsNorm(x, model.finalNorm).matMul(model.lmHead, false, true);
    const picked = tf.gather(logits.reshape([-1]), targetT);
    return tf.logSumExp(logits, 1).sub(picked).mul(countedT).sum().mul(countInv) as TF.Scalar;
  };
  const vars = model.layers.flatMap((l) => PROJECTIONS.flatMap((p) => [l.A[p], l.B[p]]));
  return { lossFn, vars };
}

/** The step's loss and the gradients of every LoRA factor (by PEFT name), from tf.variableGrads. */
export async function tfjsLossAndGrads(s: TfjsStepInputs): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const { tf } = await loadTfjs();
  const { lossFn, vars } = buildStep(tf, s);
  const { value, grads } = tf.variableGrads(lossFn, vars);
  const out = new Map<string, Float32Array>();
  for (const v of vars) out.set(v.name, (await grads[v.name]!.data()) as Float32Array);
  const loss = (await value.data())[0]!;
  tf.dispose([value, grads]);
  return { loss, grads: out };
}

export async function benchmarkTfjs(o: TfjsBenchOptions): Promise<TfjsBenchResult> {
  const { tf, info } = await loadTfjs();
  const config = benchConfig(o.size);
  const { batch: B, seq: T, rank } = o;
  const N = B * T;
  // The values of loraforge's bench step (train.ts, seed 0) in f32: weights, PEFT's initial adapter, tokens.
  const seed = 0;
  const { lossFn, vars } = buildStep(tf, {
    config,
    weights: randomQwen3HostWeights(config, seed),
    lora: randomLoraValues(config, rank, seed + 1, 0),
    rank,
    alpha: 2 * rank,
    ids: randomTokens(N, config.vocabSize, seed + 2),
    B,
    T,
  });
  const optimizer = tf.train.adam(1e-4, 0.9, 0.999, 1e-8);
  const step = (): TF.Scalar => {
    const { value, grads } = tf.variableGrads(lossFn, vars);
    // Adam's typing wants variables, but it only reads the gradients by variable name.
    optimizer.applyGradients(grads as Parameters<typeof optimizer.applyGradients>[0]);
    tf.dispose(grads);
    return value;
  };

  for (let i = 0; i < o.warmup; i++) {
    const l = step();
    await l.data();
    l.dispose();
  }
  const start = performance.now();
  let last: TF.Scalar | undefined;
  for (let i = 0; i < o.steps; i++) {
    last?.dispose();
    last = step();
  }
  // Reading the last loss waits for every queued step.
  const loss = (await last!.data())[0]!;
  const seconds = (performance.now() - start) / 1000;
  last!.dispose();
  const profile = await tf.profile(() => {
    step().dispose();
  });
  const stepS = seconds / o.steps;
  return {
    bench: 'train',
    impl: 'tfjs-webgpu',
    size: o.size,
    batch: B,
    seq: T,
    rank,
    lora_alpha: 2 * rank,
    dtype: 'f32',
    recompute: false,
    warmup_steps: o.warmup,
    steps: o.steps,
    step_s: round(stepS, 5),
    tokens_per_s: round(N / stepS, 1),
    loss: round(loss, 5),
    peak_bytes: profile.peakBytes,
    peak_gib: round(profile.peakBytes / 2 ** 30, 3),
    tfjs_version: tf.version_core,
    notes: NOTES,
    device: adapterIdentity(info),
    ...runInfo(),
  };
}
