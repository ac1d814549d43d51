// The fixed decoder graph (Qwen3, and the other families' layer recipes) for one batch shape [B, T]: the trunk maps (ids, positions, segments) to the final
// hidden states [N, H] (forward with optional LoRA), a head (heads.ts: logits, token cross-entropy, per-sequence
// log-probs) computes from them, and in training the head's gradient dHidden goes back through the trunk's
// explicit backward into the LoRA factors. Recorded once into two Programs (forward, backward) and replayed
// each step; only the batch inputs and the head's per-step values are written between steps.
import type { Gpu } from '../gpu/device.js';
import { alignUp, Program, storageRanges, type Binding, type BufferRange } from '../gpu/program.js';
import type { ModelConfig } from './config.js';
import type { LayerWeights, ModelWeights } from './weights.js';
import { loraScale, type LoraPair, type LoraWeights } from './lora-adapter.js';
import { PROJECTIONS, type LayerRecipe, type Projection } from './family.js';
import { familyOf, projectionDims } from './families.js';
import { recordRmsNorm } from '../kernels/rmsnorm.js';
import { recordRmsNormBackward } from '../kernels/rmsnorm-backward.js';
import { recordEmbedding } from '../kernels/embedding.js';
import { recordQkNormRope } from '../kernels/qk-norm-rope.js';
import { recordQkNormRopeBackward } from '../kernels/qk-norm-rope-backward.js';
import { recordRope } from '../kernels/rope.js';
import { recordBiasAdd } from '../kernels/bias-add.js';
import { recordSwiglu, recordSwigluBackward } from '../kernels/swiglu.js';
import { recordFill } from '../kernels/elementwise.js';
import { recordMatmul, type MatmulLora } from '../kernels/matmul.js';
import { recordMatmulInputGrad } from '../kernels/matmul-input-grad.js';
import { recordGemm } from '../kernels/gemm.js';
import { loraLayerPartials, recordLoraBackward, recordLoraGradSum, type LoraPartials } from '../kernels/lora-backward.js';
import { recordLoraDown } from '../kernels/lora-down.js';
import { recordAttention, setAttentionKeys } from '../kernels/attention.js';
import { recordKvCacheAppend, setKvCacheStart } from '../kernels/kv-cache.js';
import { recordAttentionBackward } from '../kernels/attention-backward.js';
import { LogitsHead, TokenCrossEntropyHead, type GraphHead } from './heads.js';
import { recordDropout, recordDropoutAccumulate } from '../kernels/dropout.js';

/** 'logits' and 'loss' record the forward only (with the logits / token cross-entropy head by default); 'train' the backward too. */
export type GraphMode = 'logits' | 'loss' | 'train';

export interface GraphOptions {
  B: number;
  T: number;
  mode: GraphMode;
  lora?: LoraWeights;
  /**
   * Recompute each layer's activations in the backward instead of keeping them (gradient checkpointing). Each
   * layer's LoRA t = x·Aᵀ ([N, r] per adapted projection) is kept all the same, so the recomputed forward makes none.
   */
  recompute?: boolean;
  /**
   * With `recompute`: keep each layer's attention output and log-sum-exp too (N·(qDim + heads) floats per layer),
   * so the recomputed forward skips attention. The memory plan decides (memory-plan.ts, chooseKeepAttention).
   */
  keepAttention?: boolean;
  /**
   * Generation (B = 1): append this step's keys and values at row `start` of the cache and attend to rows
   * 0..start+T; `setCacheStart` moves `start` without re-recording.
   */
  cache?: KvCache;
  /**
   * The head on the final hidden states; the graph destroys it with itself. By default the logits head in
   * 'logits' mode, token cross-entropy otherwise.
   */
  head?: GraphHead;
  /**
   * Training of the preference stages: a second head on the same trunk with the adapter switched off (the
   * reference model of DPO / KTO without a second copy of the weights), recorded into `referenceForward`. It
   * shares the graph's activation buffers, so it runs before `forward`.
   */
  referenceHead?: GraphHead;
}

export interface KvCache {
  /** Per layer [maxLen, nKv*headDim]. */
  k: GPUBuffer[];
  v: GPUBuffer[];
  /** u32[maxLen] of zeros: the keys' segment ids. */
  segments: GPUBuffer;
  maxLen: number;
  /** The cache row of the graph's first token, as recorded. */
  start: number;
}

/** What the batch writes into the graph's input buffers. */
export interface GraphBatch {
  inputIds: Uint32Array;
  positions: Uint32Array;
  segments: Uint32Array;
  /** Next-token targets, -100 where not counted (for the token cross-entropy head). */
  targets?: Int32Array;
}

/** The LoRA dropout mask's salt of one adapted module: each (layer, projection) draws its own mask. */
export function loraDropoutSalt(layer: number, p: Projection): number {
  return layer * PROJECTIONS.length + PROJECTIONS.indexOf(p);
}

/** Activations of one layer that the backward needs. */
interface LayerActs {
  h1: GPUBuffer; rstd1: GPUBuffer;
  /** Q [N, nHeads*headDim] and K [N, nKv*headDim] after RoPE (and Q/K norm), adjacent ranges of one buffer: what attention reads. */
  q: BufferRange; k: BufferRange;
  /**
   * recipe.qkNorm: the projections' outputs before the norm (ranges of one buffer, as q and k, so the norm binds
   * each pair once), and the norm's 1/rms [N*nHeads + N*nKv], q heads then k heads.
   */
  qRaw?: BufferRange; kRaw?: BufferRange; rstdQk?: GPUBuffer;
  v: GPUBuffer; attn: GPUBuffer; lse: GPUBuffer;
  x2: GPUBuffer; h2: GPUBuffer; rstd2: GPUBuffer;
  gate: GPUBuffer; up: GPUBuffer; act: GPUBuffer;
  /** x·Aᵀ per adapted projection, [N, r]. */
  loraT: Partial<Record<Projection, GPUBuffer>>;
}

/** Gradient scratch shared by all layers (the MLP's and attention's share memory: see allocGradBuffers). */
interface GradBuffers {
  dX: GPUBuffer; dH: GPUBuffer;
  dAct: Binding; dGate: Binding; dUp: Binding;
  dAttn: Binding; dV: Binding;
  /** Gradients of q and k, laid out as they are (adjacent ranges of one buffer). */
  dQ: BufferRange; dK: BufferRange;
  /** recipe.qkNorm: gradients of qRaw and kRaw, likewise. */
  dQRaw?: BufferRange; dKRaw?: BufferRange;
  dT: GPUBuffer;
}

export class Qwen3Graph {
  readonly N: number;
  /** Trunk forward, then the head's forward. */
  readonly forward: Program;
  /** With `referenceHead` (else empty): the trunk forward without LoRA, then the reference head's forward. */
  readonly referenceForward: Program;
  /** Training only (else empty): the head's backward (dHidden), then the trunk's backward into dA/dB. */
  readonly backward: Program;
  /** forward then backward, as one program (when nothing has to run between them). */
  readonly program: Program;
  /** Zeroes the LoRA gradients (run at the start of each accumulation cycle). */
  readonly zeroGrads: Program;
  readonly head: GraphHead;
  /** u32 [N] each: token ids, RoPE positions, segment ids. */
  readonly ids: GPUBuffer;
  readonly positions: GPUBuffer;
  readonly segments: GPUBuffer;
  /** Residual stream at the input of each layer, [N, H] each; xs[L] is the last layer's output. */
  readonly xs: GPUBuffer[];
  /** Output of the final norm [N, H]: the trunk's output, the heads' input. */
  readonly final: GPUBuffer;
  /**
   * u32[2] [seed, micro-batch index] of the LoRA dropout masks; only in 'train' mode with lora dropout > 0
   * (evaluation and generation never drop).
   */
  readonly dropoutSeed?: GPUBuffer;
  /** [N, largest adapted input] shared by all projections: the dropped LoRA input, then dt·A in the backward. */
  private readonly dropoutScratch?: GPUBuffer;
  private readonly finalRstd: GPUBuffer;
  /** Generation: the uniforms of each layer's cache appends and attention, rewritten by setCacheStart. */
  private readonly cacheUniforms: { append: GPUBuffer[]; attention: GPUBuffer[] } = { append: [], attention: [] };
  private readonly acts: LayerActs[];
  private readonly owned: GPUBuffer[];
  /** Which optional ops a layer has (the family's recipe). */
  private readonly recipe: LayerRecipe;
  /** True while the reference forward is recorded: every projection then skips its LoRA term. */
  private adapterOff = false;

  constructor(readonly gpu: Gpu, readonly config: ModelConfig, readonly weights: ModelWeights, readonly opts: GraphOptions) {
    this.recipe = familyOf(config).recipe;
    const c = config;
    const N = (this.N = opts.B * opts.T);
    const H = c.hiddenSize;
    const train = opts.mode === 'train';
    if (train && !opts.lora) throw new Error('training needs LoRA weights');
    this.forward = new Program(gpu);
    this.referenceForward = new Program(gpu);
    this.backward = new Program(gpu);
    this.program = new Program(gpu);
    this.zeroGrads = new Program(gpu);
    this.head = opts.head ?? gpu.inCategory('activations', () => (opts.mode === 'logits' ? new LogitsHead(gpu, weights.lmHead, N) : new TokenCrossEntropyHead(gpu, weights.lmHead, N)));
    let ids!: GPUBuffer, positions!: GPUBuffer, segments!: GPUBuffer;
    let xs: GPUBuffer[] = [], final!: GPUBuffer, finalRstd!: GPUBuffer;
    let acts: LayerActs[] = [];
    let dropoutSeed: GPUBuffer | undefined, dropoutScratch: GPUBuffer | undefined;
    // Inputs, activations and gradients count as 'activations' in the memory plan, the kernels' scratch and
    // uniforms made while recording as 'scratch'.
    this.owned = gpu.inCategory('activations', () => gpu.collect(() => {
      ids = gpu.storage(N * 4, 'ids');
      positions = gpu.storage(N * 4, 'positions');
      segments = gpu.storage(N * 4, 'segments');
      xs = Array.from({ length: c.numLayers + 1 }, (_, l) => gpu.storage(N * H * 4, `x${l}`));
      final = gpu.storage(N * H * 4, 'final');
      finalRstd = gpu.storage(N * 4, 'finalRstd');
      acts = this.allocLayers(train, opts.recompute ?? false, opts.keepAttention ?? false);
      if (train && opts.lora!.settings.dropout > 0) {
        dropoutSeed = gpu.storage(8, 'dropoutSeed');
        const maxIn = Math.max(...opts.lora!.settings.targets.map((p) => projectionDims(c, p)[0]));
        dropoutScratch = gpu.storage(N * maxIn * 4, 'LoRA dropout scratch');
      }
    }));
    this.ids = ids; this.positions = positions; this.segments = segments;
    this.xs = xs; this.final = final; this.finalRstd = finalRstd; this.acts = acts;
    this.dropoutSeed = dropoutSeed; this.dropoutScratch = dropoutScratch;
    this.owned.push(...gpu.inCategory('scratch', () => gpu.collect(() => this.record())));
    this.program.steps.push(...this.forward.steps, ...this.backward.steps);
  }

  /**
   * The layers' activations: one shared set outside training; every layer's own when training keeps them all;
   * with recomputation one shared set, except each layer's LoRA t (and, with `keepAttention`, its attention output
   * and log-sum-exp), which the recomputed forward then reads instead of redoing.
   */
  private allocLayers(train: boolean, recompute: boolean, keepAttention: boolean): LayerActs[] {
    const L = this.config.numLayers;
    const full = () => ({ ...this.allocTrunkActs(), ...this.allocAttentionActs(), loraT: this.allocLoraT() });
    if (!train) return [full()];
    if (!recompute) return Array.from({ length: L }, full);
    const trunk = this.allocTrunkActs();
    const sharedAttention = keepAttention ? undefined : this.allocAttentionActs();
    return Array.from({ length: L }, () => ({ ...trunk, ...(sharedAttention ?? this.allocAttentionActs()), loraT: this.allocLoraT() }));
  }

  private f32(n: number, label: string): GPUBuffer {
    return this.gpu.storage(n * 4, label);
  }

  /** x·Aᵀ per adapted projection, [N, r] each. */
  private allocLoraT(): LayerActs['loraT'] {
    const loraT: LayerActs['loraT'] = {};
    for (const p of this.opts.lora?.settings.targets ?? []) loraT[p] = this.f32(this.N * this.opts.lora!.settings.rank, `loraT.${p}`);
    return loraT;
  }

  /** Attention output [N, heads·headDim] and log-sum-exp [N, heads]. */
  private allocAttentionActs(): Pick<LayerActs, 'attn' | 'lse'> {
    const { N, config: c } = this;
    return { attn: this.f32(N * c.numHeads * c.headDim, 'attn'), lse: this.f32(N * c.numHeads, 'lse') };
  }

  /** The rest of a layer's activations (shapes in LayerActs). */
  private allocTrunkActs(): Omit<LayerActs, 'attn' | 'lse' | 'loraT'> {
    const N = this.N;
    const c = this.config;
    const f = (n: number, label: string) => this.f32(n, label);
    const kvDim = c.numKvHeads * c.headDim;
    const [q, k] = this.qkRanges('Q|K');
    const raw = this.recipe.qkNorm ? this.qkRanges('Q|K projection output') : undefined;
    return {
      h1: f(N * c.hiddenSize, 'h1'), rstd1: f(N, 'rstd1'),
      ...(raw && { qRaw: raw[0], kRaw: raw[1], rstdQk: f(N * (c.numHeads + c.numKvHeads), 'rstdQk') }), q, k,
      v: f(N * kvDim, 'v'),
      x2: f(N * c.hiddenSize, 'x2'), h2: f(N * c.hiddenSize, 'h2'), rstd2: f(N, 'rstd2'),
      gate: f(N * c.intermediateSize, 'MLP gate activation'), up: f(N * c.intermediateSize, 'MLP up activation'), act: f(N * c.intermediateSize, 'MLP activation'),
    };
  }

  /** f32 ranges [N, nHeads*headDim] and [N, nKv*headDim] of one buffer: the Q/K norm binds such a pair once. */
  private qkRanges(label: string): [BufferRange, BufferRange] {
    const c = this.config;
    const [q, k] = storageRanges(this.gpu, [this.N * c.numHeads * c.headDim * 4, this.N * c.numKvHeads * c.headDim * 4], label);
    return [q!, k!];
  }

  private actsOf(layer: number): LayerActs {
    return this.acts[this.acts.length === 1 ? 0 : layer]!;
  }

  /** Trunk forward: (ids, positions, segments) → final hidden states. */
  private recordTrunkForward(prog: Program): void {
    const { config: c, weights: w, N } = this;
    recordEmbedding(prog, { ids: this.ids, table: w.embed, out: this.xs[0]!, N });
    for (let l = 0; l < c.numLayers; l++) this.recordLayerForward(prog, l);
    recordRmsNorm(prog, { x: this.xs[c.numLayers]!, weight: w.finalNorm, y: this.final, rstd: this.finalRstd, rows: N, n: c.hiddenSize, eps: c.rmsNormEps }, 'final_norm');
  }

  private record(): void {
    const { config: c, weights: w, N } = this;
    if (this.opts.referenceHead) {
      this.adapterOff = true;
      this.recordTrunkForward(this.referenceForward);
      this.adapterOff = false;
      this.opts.referenceHead.recordForward(this.referenceForward, this.final, false);
    }
    this.recordTrunkForward(this.forward);
    this.head.recordForward(this.forward, this.final, this.opts.mode === 'train');
    if (this.opts.mode !== 'train') return;
    const g = this.allocGrads();
    const prog = this.backward;
    // The head's gradient dHidden, then d(final norm) → gradient of the last layer's output.
    this.head.recordBackward(prog, g.dH);
    recordRmsNormBackward(prog, { x: this.xs[c.numLayers]!, weight: w.finalNorm, rstd: this.finalRstd, dy: g.dH, dx: g.dX, rows: N, n: c.hiddenSize });
    for (let l = c.numLayers - 1; l >= 0; l--) {
      // The forward's last layer left its activations in the shared buffers: only the others are recomputed.
      if (this.opts.recompute && l < c.numLayers - 1) this.recordLayerForward(prog, l, true);
      this.recordLayerBackward(prog, l, g);
    }
    for (const g of this.opts.lora!.grads) recordFill(this.zeroGrads, { dst: g.buffer, count: g.count, value: 0 });
  }

  private allocGrads(): GradBuffers {
    return this.gpu.inCategory('activations', () => this.allocGradBuffers());
  }

  private allocGradBuffers(): GradBuffers {
    const { gpu, N } = this;
    const c = this.config;
    const f = (n: number, label: string) => this.f32(n, label);
    const qBytes = N * c.numHeads * c.headDim * 4;
    const kvBytes = N * c.numKvHeads * c.headDim * 4;
    const mlpBytes = N * c.intermediateSize * 4;
    // The MLP's gradients die in gate/up's backward, before o_proj's writes dAttn, and attention's in q/k/v's, before
    // the next layer's down_proj writes dAct: three buffers hold both sets, each MLP gradient sharing its memory
    // with a [N, qDim] and a [N, kvDim] gradient of attention. Paired so that no dispatch reads one buffer and
    // writes it (WebGPU forbids a read-only and a writable binding of one buffer in a dispatch). dQ|dK and
    // dQRaw|dKRaw are each such a pair (the Q/K norm's backward binds each once); dQRaw takes dAttn's range, dead
    // once the attention backward has read it.
    const kvOffset = alignUp(qBytes);
    const shared = (label: string): [BufferRange, BufferRange, BufferRange] => {
      const buffer = gpu.storage(Math.max(mlpBytes, kvOffset + kvBytes), label);
      return [{ buffer, offset: 0, size: mlpBytes }, { buffer, offset: 0, size: qBytes }, { buffer, offset: kvOffset, size: kvBytes }];
    };
    const [dAct, dAttn, dKRaw] = shared('dAct | dAttn then dQRaw, dKRaw');
    const [dGate, dQ, dK] = shared('dGate | dQ, dK');
    const [dUp, , dV] = shared('dUp | dV');
    return {
      dX: f(N * c.hiddenSize, 'dX'), dH: f(N * c.hiddenSize, 'dH'),
      dAct, dGate, dUp, dAttn, dQ, dK, dV,
      ...(this.recipe.qkNorm && { dQRaw: dAttn, dKRaw }),
      dT: f(N * (this.opts.lora?.settings.rank ?? 1), 'dT'),
    };
  }

  /**
   * t = x·Aᵀ of the adapted projections among `group` (which all read x) in one pass over x; returns those
   * projections. Not with dropout: each projection then reads x under its own mask.
   */
  private loraDown(prog: Program, l: number, group: Projection[], x: Binding, acts: LayerActs): Set<Projection> {
    const adapted = group.filter((p) => this.loraPair(l, p));
    if (this.dropoutSeed || adapted.length === 0) return new Set();
    recordLoraDown(prog, {
      x, M: this.N, K: this.loraPair(l, adapted[0]!)!.inDim, r: this.opts.lora!.settings.rank,
      factors: adapted.map((p) => ({ A: this.loraPair(l, p)!.A, t: acts.loraT[p]! })),
    }, `L${l}.${adapted.join('.')}.loraA`);
    return new Set(adapted);
  }

  /** y = (residual +) x·Wᵀ (+ s·(x·Aᵀ)·Bᵀ when the projection is adapted; t = x·Aᵀ already made when `tReady`). */
  private projection(prog: Program, l: number, p: Projection, x: Binding, y: Binding, acts: LayerActs, residual?: Binding, tReady = false): void {
    const lora = this.loraProduct(prog, l, p, x, acts, tReady);
    recordMatmul(prog, { x, w: this.weights.layers[l]!.proj[p], y, M: this.N, lora, residual }, `L${l}.${p}`);
  }

  /** t = x·Aᵀ of an adapted projection (unless `tReady`), and the LoRA term its matmul adds; undefined if not adapted. */
  private loraProduct(prog: Program, l: number, p: Projection, x: Binding, acts: LayerActs, tReady = false): MatmulLora | undefined {
    const pair = this.loraPair(l, p);
    if (!pair) return undefined;
    // t = x·Aᵀ first; the matmul's reduction then runs over [x | s·t]·[W | B]ᵀ in one pass over y.
    const r = this.opts.lora!.settings.rank;
    const t = acts.loraT[p]!;
    if (!tReady) recordLoraDown(prog, { x: this.loraInput(prog, l, p, x, pair.inDim), M: this.N, K: pair.inDim, r, factors: [{ A: pair.A, t }] }, `L${l}.${p}.loraA`);
    return { t, B: pair.B, r, scale: loraScale(this.opts.lora!.settings) };
  }

  /**
   * The LoRA path's input: x itself, or, when training with dropout, x·mask/(1−p) in the shared scratch. The mask
   * depends only on the seed buffer and the module, so the backward (and a recomputed forward) regenerate it.
   */
  private loraInput(prog: Program, l: number, p: Projection, x: Binding, inDim: number): Binding {
    if (!this.dropoutSeed) return x;
    const out = this.dropoutScratch!;
    recordDropout(prog, { x, out, count: this.N * inDim, seedBuf: this.dropoutSeed, salt: loraDropoutSalt(l, p), p: this.opts.lora!.settings.dropout }, `L${l}.${p}.dropout`);
    return out;
  }

  /**
   * Backward of a projection: dx (=, or += when `accumulate`) dy·W, plus the LoRA path with xd = dropout(x)
   * (x without dropout): dt = s·dy·B and the chunks' partial sums of dB = s·dyᵀ·t and dA = dtᵀ·xd in one dispatch
   * (lora-backward.ts; the layer's sum adds them to the gradients), then dx += mask⊙(dt·A)/(1−p).
   */
  private projectionBackward(prog: Program, l: number, p: Projection, x: Binding, dy: Binding, dx: Binding, accumulate: boolean, acts: LayerActs, g: GradBuffers, partials: LoraPartials | undefined): void {
    const N = this.N;
    const W = this.weights.layers[l]!.proj[p];
    const pair = this.loraPair(l, p);
    if (!pair) {
      recordMatmulInputGrad(prog, { dy, w: W, dx, M: N, accumulate }, `L${l}.${p}.dx`);
      return;
    }
    const r = this.opts.lora!.settings.rank;
    const s = loraScale(this.opts.lora!.settings);
    const xd = this.loraInput(prog, l, p, x, pair.inDim);
    if (partials) {
      recordLoraBackward(prog, {
        dy, t: acts.loraT[p]!, B: pair.B, x: xd, dT: g.dT, partials, dA: pair.dA, dB: pair.dB, N, outDim: pair.outDim, inDim: pair.inDim, r, scale: s,
      }, `L${l}.${p}.lora`);
    } else {
      // A layer's gradients beyond one binding (see loraLayerPartials): three GEMMs, each summed over the tokens.
      recordGemm(prog, { a: dy, b: acts.loraT[p]!, c: pair.dB, M: pair.outDim, N: r, K: N, transA: true, alpha: s, beta: 1 }, `L${l}.${p}.dB`);
      recordGemm(prog, { a: dy, b: pair.B, c: g.dT, M: N, N: r, K: pair.outDim, alpha: s }, `L${l}.${p}.dT`);
      recordGemm(prog, { a: g.dT, b: xd, c: pair.dA, M: r, N: pair.inDim, K: N, transA: true, beta: 1 }, `L${l}.${p}.dA`);
    }
    if (!this.dropoutSeed) {
      // dx = dy·W + dt·A in one reduction over [dy | dt]·[W; A].
      recordMatmulInputGrad(prog, { dy, w: W, dx, M: N, accumulate, lora: { dT: g.dT, A: pair.A, r } }, `L${l}.${p}.dx`);
      return;
    }
    // With dropout the LoRA term goes through the mask: the LoRA backward has read xd, so the scratch now takes dt·A.
    recordMatmulInputGrad(prog, { dy, w: W, dx, M: N, accumulate }, `L${l}.${p}.dx`);
    const dtA = this.dropoutScratch!;
    recordGemm(prog, { a: g.dT, b: pair.A, c: dtA, M: N, N: pair.inDim, K: r }, `L${l}.${p}.dtA`);
    recordDropoutAccumulate(prog, { src: dtA, dst: dx, count: N * pair.inDim, seedBuf: this.dropoutSeed, salt: loraDropoutSalt(l, p), p: this.opts.lora!.settings.dropout }, `L${l}.${p}.dxLora`);
  }

  /**
   * Layer l's LoRA gradient partials (per token chunk, laid out like its dA/dB ranges; the same scratch for every
   * layer of the same shapes); undefined when no projection of the layer is adapted or its gradients exceed a binding.
   */
  private loraPartials(prog: Program, l: number): LoraPartials | undefined {
    const pairs = PROJECTIONS.flatMap((p) => this.loraPair(l, p) ?? []);
    if (pairs.length === 0) return undefined;
    // In memory order, so that ranges adjacent in a flat buffer form one piece of the sum.
    const flat = this.opts.lora!.grads;
    const at = (r: BufferRange) => flat.findIndex((f) => f.buffer === r.buffer) * 2 ** 32 + r.offset;
    const ranges = pairs.flatMap((pair) => [pair.dA, pair.dB]).sort((a, b) => at(a) - at(b));
    return loraLayerPartials(prog, ranges, this.N, this.opts.lora!.settings.rank);
  }

  private loraPair(l: number, p: Projection): LoraPair | undefined {
    if (this.adapterOff) return undefined;
    return this.opts.lora?.layers[l]?.[p];
  }

  private recordLayerForward(prog: Program, l: number, recomputing = false): void {
    const c = this.config;
    const N = this.N;
    const lw: LayerWeights = this.weights.layers[l]!;
    const a = this.actsOf(l);
    const x = this.xs[l]!;
    recordRmsNorm(prog, { x, weight: lw.inputNorm, y: a.h1, rstd: a.rstd1, rows: N, n: c.hiddenSize, eps: c.rmsNormEps }, `L${l}.input_norm`);
    const { qkNorm, qkvBias } = this.recipe;
    // Without the Q/K norm the projections write q and k directly, and RoPE rotates them in place.
    const qOut = qkNorm ? a.qRaw! : a.q;
    const kOut = qkNorm ? a.kRaw! : a.k;
    // Recomputing, every t = x·Aᵀ is this layer's own, kept from the forward: no LoRA down product is redone.
    const tReady = (down: Set<Projection>, p: Projection) => recomputing || down.has(p);
    const qkvDown = recomputing ? new Set<Projection>() : this.loraDown(prog, l, ['q_proj', 'k_proj', 'v_proj'], a.h1, a);
    this.projection(prog, l, 'q_proj', a.h1, qOut, a, undefined, tReady(qkvDown, 'q_proj'));
    this.projection(prog, l, 'k_proj', a.h1, kOut, a, undefined, tReady(qkvDown, 'k_proj'));
    this.projection(prog, l, 'v_proj', a.h1, a.v, a, undefined, tReady(qkvDown, 'v_proj'));
    if (qkvBias) {
      recordBiasAdd(prog, { x: qOut, bias: lw.qBias!, rows: N, cols: c.numHeads * c.headDim }, `L${l}.q_bias`);
      recordBiasAdd(prog, { x: kOut, bias: lw.kBias!, rows: N, cols: c.numKvHeads * c.headDim }, `L${l}.k_bias`);
      recordBiasAdd(prog, { x: a.v, bias: lw.vBias!, rows: N, cols: c.numKvHeads * c.headDim }, `L${l}.v_bias`);
    }
    const rope = { positions: this.positions, N, headDim: c.headDim, theta: c.ropeTheta };
    if (qkNorm) {
      recordQkNormRope(prog, {
        ...rope, eps: c.rmsNormEps, nHeads: c.numHeads, nKv: c.numKvHeads, x: { q: a.qRaw!, k: a.kRaw! }, weight: { q: lw.qNorm!, k: lw.kNorm! }, y: { q: a.q, k: a.k }, rstd: a.rstdQk!,
      }, `L${l}.qk_norm_rope`);
    } else {
      recordRope(prog, { ...rope, x: a.q, heads: c.numHeads }, `L${l}.q_rope`);
      recordRope(prog, { ...rope, x: a.k, heads: c.numKvHeads }, `L${l}.k_rope`);
    }
    const cache = this.opts.cache;
    if (cache) {
      const append = { T: N, width: c.numKvHeads * c.headDim, start: cache.start };
      this.cacheUniforms.append.push(
        recordKvCacheAppend(prog, { ...append, src: a.k, cache: cache.k[l]! }, `L${l}.cache_k`),
        recordKvCacheAppend(prog, { ...append, src: a.v, cache: cache.v[l]! }, `L${l}.cache_v`),
      );
    }
    // Recomputing with the attention output and lse kept, only q, k and v are redone (the attention backward reads them).
    if (!(recomputing && this.opts.keepAttention)) {
      const attention = recordAttention(prog, {
        q: a.q, k: cache ? cache.k[l]! : a.k, v: cache ? cache.v[l]! : a.v, out: a.attn, lse: a.lse,
        segQ: this.segments, segK: cache ? cache.segments : this.segments,
        B: this.opts.B, Tq: this.opts.T, Tk: cache ? cache.start + this.opts.T : this.opts.T, qStart: cache?.start ?? 0,
        nHeads: c.numHeads, nKv: c.numKvHeads, headDim: c.headDim,
      }, `L${l}.attention`);
      if (cache) this.cacheUniforms.attention.push(attention);
    }
    // x2 = x + o_proj(attn), the residual added in the matmul
    this.projection(prog, l, 'o_proj', a.attn, a.x2, a, x, recomputing);
    recordRmsNorm(prog, { x: a.x2, weight: lw.postAttnNorm, y: a.h2, rstd: a.rstd2, rows: N, n: c.hiddenSize, eps: c.rmsNormEps }, `L${l}.post_norm`);
    const gateUpDown = recomputing ? new Set<Projection>() : this.loraDown(prog, l, ['gate_proj', 'up_proj'], a.h2, a);
    this.projection(prog, l, 'gate_proj', a.h2, a.gate, a, undefined, tReady(gateUpDown, 'gate_proj'));
    this.projection(prog, l, 'up_proj', a.h2, a.up, a, undefined, tReady(gateUpDown, 'up_proj'));
    recordSwiglu(prog, { gate: a.gate, up: a.up, out: a.act, count: N * c.intermediateSize });
    // x_out = x2 + down(act), likewise. Recomputing, the output is the kept next layer input and t is kept: nothing to do.
    if (!recomputing) this.projection(prog, l, 'down_proj', a.act, this.xs[l + 1]!, a, a.x2);
  }

  /** On entry g.dX holds d(layer output); on exit d(layer input). */
  private recordLayerBackward(prog: Program, l: number, g: GradBuffers): void {
    const c = this.config;
    const N = this.N;
    const lw = this.weights.layers[l]!;
    const a = this.actsOf(l);
    // The layer's LoRA gradient partials: every projection's backward writes its chunk sums there, one sum at the end.
    const partials = this.loraPartials(prog, l);
    // MLP: x_out = x2 + down(swiglu(gate(h2), up(h2)))
    this.projectionBackward(prog, l, 'down_proj', a.act, g.dX, g.dAct, false, a, g, partials);
    recordSwigluBackward(prog, { gate: a.gate, up: a.up, dOut: g.dAct, dGate: g.dGate, dUp: g.dUp, count: N * c.intermediateSize });
    this.projectionBackward(prog, l, 'gate_proj', a.h2, g.dGate, g.dH, false, a, g, partials);
    this.projectionBackward(prog, l, 'up_proj', a.h2, g.dUp, g.dH, true, a, g, partials);
    recordRmsNormBackward(prog, { x: a.x2, weight: lw.postAttnNorm, rstd: a.rstd2, dy: g.dH, dx: g.dX, rows: N, n: c.hiddenSize, accumulate: true });
    // Attention: x2 = x + o(attn(rope(qnorm(q(h1))), rope(knorm(k(h1))), v(h1)))
    this.projectionBackward(prog, l, 'o_proj', a.attn, g.dX, g.dAttn, false, a, g, partials);
    recordAttentionBackward(prog, {
      q: a.q, k: a.k, v: a.v, out: a.attn, dOut: g.dAttn, lse: a.lse, segQ: this.segments, segK: this.segments,
      dq: g.dQ, dk: g.dK, dv: g.dV, B: this.opts.B, T: this.opts.T, nHeads: c.numHeads, nKv: c.numKvHeads, headDim: c.headDim,
    });
    // The biases pass the gradient through unchanged (and are frozen): d(projection output) = d(norm/RoPE input).
    const rope = { positions: this.positions, N, headDim: c.headDim, theta: c.ropeTheta };
    if (this.recipe.qkNorm) {
      recordQkNormRopeBackward(prog, {
        ...rope, nHeads: c.numHeads, nKv: c.numKvHeads, x: { q: a.qRaw!, k: a.kRaw! }, weight: { q: lw.qNorm!, k: lw.kNorm! }, rstd: a.rstdQk!,
        dy: { q: g.dQ, k: g.dK }, dx: { q: g.dQRaw!, k: g.dKRaw! },
      });
    } else {
      recordRope(prog, { ...rope, x: g.dQ, heads: c.numHeads, inverse: true }, `L${l}.q_rope_backward`);
      recordRope(prog, { ...rope, x: g.dK, heads: c.numKvHeads, inverse: true }, `L${l}.k_rope_backward`);
    }
    this.projectionBackward(prog, l, 'q_proj', a.h1, g.dQRaw ?? g.dQ, g.dH, false, a, g, partials);
    this.projectionBackward(prog, l, 'k_proj', a.h1, g.dKRaw ?? g.dK, g.dH, true, a, g, partials);
    this.projectionBackward(prog, l, 'v_proj', a.h1, g.dV, g.dH, true, a, g, partials);
    recordRmsNormBackward(prog, { x: this.xs[l]!, weight: lw.inputNorm, rstd: a.rstd1, dy: g.dH, dx: g.dX, rows: N, n: c.hiddenSize, accumulate: true });
    if (partials) recordLoraGradSum(prog, partials, `L${l}.lora_grad_sum`);
  }

  /**
   * Write a batch's inputs. Targets go to the token cross-entropy head; `invCount` = 1 / counted tokens of the
   * whole optimizer step (default: of this batch).
   */
  setBatch(b: GraphBatch, invCount?: number): void {
    const gpu = this.gpu;
    if (b.inputIds.length !== this.N) throw new Error(`batch has ${b.inputIds.length} tokens, graph expects ${this.N}`);
    gpu.write(this.ids, b.inputIds);
    gpu.write(this.positions, b.positions);
    gpu.write(this.segments, b.segments);
    // Other heads take their per-token data themselves (a logits head has none).
    if (b.targets && this.head instanceof TokenCrossEntropyHead) this.head.setTargets(b.targets, invCount);
  }

  private lossHead(): TokenCrossEntropyHead {
    if (!(this.head instanceof TokenCrossEntropyHead)) throw new Error('this graph has no token cross-entropy head');
    return this.head;
  }

  /** f32[1] of the token cross-entropy head: Σ counted token losses · invCount. */
  get loss(): GPUBuffer {
    return this.lossHead().loss;
  }

  /** f32 [N, V] of the logits head. */
  get logits(): GPUBuffer {
    if (!(this.head instanceof LogitsHead)) throw new Error('this graph has no logits head');
    return this.head.logits;
  }

  /** Generation: the graph's tokens go to cache rows start.. and attend to rows 0..start+T−1 (uniform writes only). */
  setCacheStart(start: number): void {
    const cache = this.opts.cache;
    if (!cache) throw new Error('this graph has no KV cache');
    const c = this.config;
    const T = this.opts.T;
    if (!(Number.isInteger(start) && start >= 0 && start + T <= cache.maxLen)) throw new Error(`cache rows ${start}..${start + T} are outside a ${cache.maxLen}-row cache`);
    const width = c.numKvHeads * c.headDim;
    for (const p of this.cacheUniforms.append) setKvCacheStart(this.gpu, p, { T, width, start });
    for (const p of this.cacheUniforms.attention) {
      setAttentionKeys(this.gpu, p, { B: 1, Tq: T, Tk: start + T, qStart: start, nHeads: c.numHeads, nKv: c.numKvHeads, headDim: c.headDim });
    }
  }

  /** Select the LoRA dropout masks of the next run: a pure function of (seed, micro-batch index, module). */
  setDropoutStep(seed: number, microBatch: number): void {
    if (this.dropoutSeed) this.gpu.write(this.dropoutSeed, new Uint32Array([seed >>> 0, microBatch >>> 0]));
  }

  readLoss(): Promise<number> {
    return this.lossHead().readLoss();
  }

  destroy(): void {
    for (const b of this.owned) this.gpu.release(b);
    this.head.destroy();
    this.opts.referenceHead?.destroy();
  }
}

/** Inputs for B independent rows of length T: positions 0..T-1, one segment. */
export function plainBatch(inputIds: ArrayLike<number>, B: number, T: number, targets?: Int32Array): GraphBatch {
  const positions = new Uint32Array(B * T);
  for (let i = 0; i < B * T; i++) positions[i] = i % T;
  return { inputIds: Uint32Array.from(inputIds), positions, segments: new Uint32Array(B * T), targets };
}

/** Shift labels [B, T] by one: targets[b, t] = labels[b, t+1], -100 at the end of each row. */
export function shiftLabels(labels: ArrayLike<number>, B: number, T: number): Int32Array {
  const out = new Int32Array(B * T).fill(-100);
  for (let b = 0; b < B; b++) for (let t = 0; t + 1 < T; t++) out[b * T + t] = labels[b * T + t + 1]!;
  return out;
}
