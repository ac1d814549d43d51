// LoRA adapters on a model's projections (its family's list and names): f32 A [r, in] and B [out, r] on the GPU,
// PEFT's initialisation, and PEFT's adapter layout (adapter_model.safetensors + adapter_config.json) as bytes. No Node API here (the
// browser demo uses it); lora.ts adds adapter folders on disk.
import type { Gpu } from '../gpu/device.js';
import type { ModelConfig, Projection } from '../model/family.js';
import type { BufferRange, LoraPair, LoraSettings, LoraWeights } from '../model/lora-adapter.js';
import { LoraTargetError, parseLoraTargets, peftTensorName, projectionDims } from '../model/families.js';
import { serializeSafetensors, type SafetensorsReader, type TensorToWrite } from '../model/safetensors-format.js';
import { fileError, UserError } from '../errors.js';
import { seededRandom } from '../random.js';

// The adapter's types and scale belong to the model (the graph runs with them); re-exported for train's users.
export { loraScale, type LoraPair, type LoraSettings, type LoraWeights } from '../model/lora-adapter.js';

/** WebGPU's largest minStorageBufferOffsetAlignment: every gradient range starts on it. */
const RANGE_ALIGN = 256;

/**
 * Every gradient of the adapter (per layer, per target: dA [r, in] then dB [out, r]) packed into as few f32
 * buffers as one binding each allows, in that order.
 */
function allocGradients(gpu: Gpu, c: ModelConfig, rank: number, targets: Projection[]): { grads: LoraWeights['grads']; ranges: { dA: BufferRange; dB: BufferRange }[][] } {
  const sizes = Array.from({ length: c.numLayers }, () => targets.map((p) => {
    const [inDim, outDim] = projectionDims(c, p);
    return [rank * inDim * 4, outDim * rank * 4];
  }));
  const align = (n: number) => Math.ceil(n / RANGE_ALIGN) * RANGE_ALIGN;
  // Assign offsets, opening a new buffer whenever the next range would pass one binding.
  const bufferBytes: number[] = [0];
  const placed = sizes.map((layer) => layer.map((pair) => pair.map((bytes) => {
    let at = align(bufferBytes[bufferBytes.length - 1]!);
    if (at + bytes > gpu.maxBindingBytes && at > 0) {
      bufferBytes.push(0);
      at = 0;
    }
    bufferBytes[bufferBytes.length - 1] = at + bytes;
    return { index: bufferBytes.length - 1, offset: at, size: bytes };
  })));
  const grads = bufferBytes.map((bytes, i) => ({ buffer: gpu.storage(align(bytes), `lora.grads${i}`), count: align(bytes) / 4 }));
  const range = (r: { index: number; offset: number; size: number }): BufferRange => ({ buffer: grads[r.index]!.buffer, offset: r.offset, size: r.size });
  return { grads, ranges: placed.map((layer) => layer.map(([dA, dB]) => ({ dA: range(dA!), dB: range(dB!) }))) };
}

function allocPair(gpu: Gpu, inDim: number, outDim: number, A: Float32Array, B: Float32Array, grads: { dA: BufferRange; dB: BufferRange }, label: string): LoraPair {
  return { A: gpu.upload(A, `${label}.A`), B: gpu.upload(B, `${label}.B`), ...grads, inDim, outDim };
}

function checkRank(c: ModelConfig, s: LoraSettings): void {
  if (!Number.isInteger(s.rank) || s.rank < 1) throw new UserError(`lora_rank must be a positive integer, got ${s.rank}`);
  for (const p of s.targets) {
    const [i, o] = projectionDims(c, p);
    if (s.rank > Math.min(i, o)) throw new UserError(`lora_rank ${s.rank} is larger than ${p}'s smallest dimension ${Math.min(i, o)}`);
  }
}

/** PEFT's default initialisation: A Kaiming-uniform (a = sqrt(5): bound 1/sqrt(in)), B zero; seeded. */
export function initLora(gpu: Gpu, c: ModelConfig, s: LoraSettings, seed: number): LoraWeights {
  checkRank(c, s);
  const rand = seededRandom(seed);
  const { grads, ranges } = allocGradients(gpu, c, s.rank, s.targets);
  const layers: LoraWeights['layers'] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const layer: Partial<Record<Projection, LoraPair>> = {};
    for (const [k, p] of s.targets.entries()) {
      const [inDim, outDim] = projectionDims(c, p);
      const bound = 1 / Math.sqrt(inDim);
      const A = new Float32Array(s.rank * inDim);
      for (let i = 0; i < A.length; i++) A[i] = (rand() * 2 - 1) * bound;
      layer[p] = allocPair(gpu, inDim, outDim, A, new Float32Array(outDim * s.rank), ranges[l]![k]!, `L${l}.${p}`);
    }
    layers.push(layer);
  }
  return { config: c, settings: s, layers, grads };
}

/**
 * A PEFT LoRA adapter onto the GPU from its parsed adapter_config.json (`configFile` names it in errors) and its
 * adapter_model.safetensors tensors.
 */
export function loraFromPeft(gpu: Gpu, configFile: string, j: unknown, tensors: SafetensorsReader, c: ModelConfig): LoraWeights {
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw fileError(configFile, 'is not a JSON object');
  const cfg = j as Record<string, unknown>;
  if (cfg.peft_type !== 'LORA') throw fileError(configFile, `peft_type must be LORA, got ${JSON.stringify(cfg.peft_type)}`);
  if (cfg.use_dora) throw fileError(configFile, 'DoRA adapters are not supported');
  const rank = Number(cfg.r);
  const tm = cfg.target_modules;
  if (typeof tm !== 'string' && !(Array.isArray(tm) && tm.every((t) => typeof t === 'string'))) {
    throw fileError(configFile, `target_modules must be a string or a list of module names, got ${JSON.stringify(tm)}`);
  }
  let targets: Projection[];
  try {
    targets = parseLoraTargets(tm);
  } catch (e) {
    if (e instanceof LoraTargetError) throw fileError(configFile, `target_modules ${e.problem}`);
    throw e;
  }
  const settings: LoraSettings = { rank, alpha: Number(cfg.lora_alpha ?? rank), rslora: !!cfg.use_rslora, dropout: Number(cfg.lora_dropout ?? 0), targets };
  checkRank(c, settings);
  const file = tensors.path;
  const layers: LoraWeights['layers'] = [];
  const used = new Set<string>();
  const { grads, ranges } = allocGradients(gpu, c, rank, targets);
  try {
    for (let l = 0; l < c.numLayers; l++) {
      const layer: Partial<Record<Projection, LoraPair>> = {};
      layers.push(layer);
      for (const [k, p] of targets.entries()) {
        const [inDim, outDim] = projectionDims(c, p);
        const read = (f: 'A' | 'B', shape: number[]) => {
          const name = peftTensorName(c, l, p, f);
          const info = tensors.tensors.get(name);
          if (!info) throw fileError(file, `missing tensor ${name}`);
          if (info.shape.join(',') !== shape.join(',')) throw fileError(file, `${name} has shape [${info.shape}], expected [${shape}]`);
          used.add(name);
          const data = tensors.readF32(name);
          if (!data.every(Number.isFinite)) throw fileError(file, `${name} contains NaN or Inf`);
          return data;
        };
        layer[p] = allocPair(gpu, inDim, outDim, read('A', [rank, inDim]), read('B', [outDim, rank]), ranges[l]![k]!, `L${l}.${p}`);
      }
    }
    const extra = [...tensors.tensors.keys()].filter((n) => !used.has(n));
    if (extra.length) throw fileError(file, `unexpected tensor ${extra[0]}${extra.length > 1 ? ` (and ${extra.length - 1} more)` : ''}`);
  } catch (e) {
    releaseLora(gpu, { config: c, settings, layers, grads });
    throw e;
  }
  return { config: c, settings, layers, grads };
}

/** Every LoRA factor's values by PEFT name. */
export async function readLoraTensors(gpu: Gpu, w: LoraWeights, which: 'weights' | 'grads' = 'weights'): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (let l = 0; l < w.layers.length; l++) {
    for (const p of w.settings.targets) {
      const pair = w.layers[l]![p]!;
      const read = (buffer: GPUBuffer | BufferRange, count: number) => ('buffer' in buffer ? gpu.readF32(buffer.buffer, count, buffer.offset / 4) : gpu.readF32(buffer, count));
      out.set(peftTensorName(w.config, l, p, 'A'), await read(which === 'weights' ? pair.A : pair.dA, w.settings.rank * pair.inDim));
      out.set(peftTensorName(w.config, l, p, 'B'), await read(which === 'weights' ? pair.B : pair.dB, pair.outDim * w.settings.rank));
    }
  }
  return out;
}

/** Overwrite factors (or their gradients) from values by PEFT name, e.g. to restore a saved state. */
export function writeLoraTensors(gpu: Gpu, w: LoraWeights, values: Map<string, Float32Array>, which: 'weights' | 'grads'): void {
  for (let l = 0; l < w.layers.length; l++) {
    for (const p of w.settings.targets) {
      const pair = w.layers[l]![p]!;
      for (const f of ['A', 'B'] as const) {
        const name = peftTensorName(w.config, l, p, f);
        const v = values.get(name);
        if (!v) throw new Error(`no values for ${name}`);
        if (which === 'weights') gpu.write(pair[f], v);
        else {
          const g = f === 'A' ? pair.dA : pair.dB;
          gpu.write(g.buffer, v, g.offset);
        }
      }
    }
  }
}

/** The adapter_config.json object PEFT writes for these settings. */
export function peftAdapterConfig(s: LoraSettings, baseModel: string | null): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    r: s.rank,
    lora_alpha: s.alpha,
    lora_dropout: s.dropout,
    use_rslora: s.rslora,
    target_modules: [...s.targets],
    bias: 'none',
    fan_in_fan_out: false,
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
    use_dora: false,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    revision: null,
  };
}

/** The adapter's tensors as PEFT saves them (f32, PEFT names and shapes). */
export async function peftAdapterTensors(gpu: Gpu, w: LoraWeights): Promise<TensorToWrite[]> {
  const values = await readLoraTensors(gpu, w);
  const tensors: TensorToWrite[] = [];
  for (let l = 0; l < w.layers.length; l++) {
    for (const p of w.settings.targets) {
      const pair = w.layers[l]![p]!;
      for (const [f, shape] of [['A', [w.settings.rank, pair.inDim]], ['B', [pair.outDim, w.settings.rank]]] as const) {
        const name = peftTensorName(w.config, l, p, f);
        tensors.push({ name, dtype: 'F32', shape: [...shape], data: values.get(name)! });
      }
    }
  }
  return tensors;
}

/** adapter_model.safetensors and adapter_config.json as bytes and text (what savePeftAdapter writes). */
export async function serializePeftAdapter(gpu: Gpu, w: LoraWeights, baseModel: string | null): Promise<{ safetensors: Uint8Array; config: string }> {
  return {
    safetensors: serializeSafetensors(await peftAdapterTensors(gpu, w), { format: 'pt' }),
    config: JSON.stringify(peftAdapterConfig(w.settings, baseModel), null, 2) + '\n',
  };
}

export function releaseLora(gpu: Gpu, w: LoraWeights): void {
  for (const layer of w.layers) for (const pair of Object.values(layer)) for (const b of [pair.A, pair.B]) gpu.release(b);
  for (const g of w.grads) gpu.release(g.buffer);
  w.layers = [];
  w.grads = [];
}
