// LoRA adapters on a model's projections (its family's list and names): f32 A [r, in] and B [out, r] on the GPU
// as ranges of a few flat buffers, PEFT's initialisation, and PEFT's adapter layout (adapter_model.safetensors +
// adapter_config.json) as bytes. No Node API here (the browser demo uses it); lora.ts adds adapter folders on disk.
import type { Gpu } from '../gpu/device.js';
import { alignUp } from '../gpu/program.js';
import type { ModelConfig, Projection } from '../model/family.js';
import type { BufferRange, FlatBuffer, LoraPair, LoraSettings, LoraWeights } from '../model/lora-adapter.js';
import { LoraTargetError, parseLoraTargets, peftTensorName, projectionDims } from '../model/families.js';
import { serializeSafetensors, type SafetensorsReader, type TensorToWrite } from '../model/safetensors-format.js';
import { fileError, UserError } from '../errors.js';
import { seededRandom } from '../random.js';

// The adapter's types and scale belong to the model (the graph runs with them); re-exported for train's users.
export { loraScale, type LoraPair, type LoraSettings, type LoraWeights } from '../model/lora-adapter.js';

/** Where one tensor lies in the adapter's flat buffers: buffer `index`, byte `offset`, `size` bytes. */
interface Placement {
  index: number;
  offset: number;
  size: number;
}

/**
 * The adapter's flat layout: every A [r, in] and B [out, r] (per layer, per target, A then B) at a 256-aligned
 * byte range, packed into as few f32 buffers as one binding each allows. Factors, gradients and AdamW's moments all
 * use it, so each is a handful of buffers and the optimizer updates them a buffer per dispatch.
 */
function flatLayout(gpu: Gpu, c: ModelConfig, rank: number, targets: Projection[]): { bufferBytes: number[]; placed: Placement[][][] } {
  // Assign offsets, opening a new buffer whenever the next range would pass one binding.
  const bufferBytes: number[] = [0];
  const placed = Array.from({ length: c.numLayers }, () => targets.map((p) => {
    const [inDim, outDim] = projectionDims(c, p);
    return [rank * inDim * 4, outDim * rank * 4].map((bytes) => {
      let at = alignUp(bufferBytes[bufferBytes.length - 1]!);
      if (at + bytes > gpu.maxBindingBytes && at > 0) {
        bufferBytes.push(0);
        at = 0;
      }
      bufferBytes[bufferBytes.length - 1] = at + bytes;
      return { index: bufferBytes.length - 1, offset: at, size: bytes };
    });
  }));
  return { bufferBytes: bufferBytes.map((b) => alignUp(b)), placed };
}

/**
 * The adapter's factors and gradients in the flat layout, every pair's ranges of them; the factors from `factor`
 * (layer, target index, which, its element count), written in place. Buffers start zeroed, so gaps stay 0.
 */
function allocFlat(
  gpu: Gpu, c: ModelConfig, s: LoraSettings, factor: (l: number, k: number, f: 'A' | 'B', count: number) => Float32Array,
): Pick<LoraWeights, 'layers' | 'params' | 'grads'> {
  const { bufferBytes, placed } = flatLayout(gpu, c, s.rank, s.targets);
  const params: FlatBuffer[] = [];
  const grads: FlatBuffer[] = [];
  const layers: LoraWeights['layers'] = [];
  try {
    for (const [i, bytes] of bufferBytes.entries()) {
      params.push({ buffer: gpu.storage(bytes, `lora.params${i}`), count: bytes / 4 });
      grads.push({ buffer: gpu.storage(bytes, `lora.grads${i}`), count: bytes / 4 });
    }
    // Each flat factor buffer is filled on the CPU and written once.
    const host = bufferBytes.map((bytes) => new Float32Array(bytes / 4));
    for (let l = 0; l < c.numLayers; l++) {
      const layer: Partial<Record<Projection, LoraPair>> = {};
      for (const [k, p] of s.targets.entries()) {
        const [inDim, outDim] = projectionDims(c, p);
        const [a, b] = placed[l]![k]!;
        const range = (flat: FlatBuffer[], r: Placement): BufferRange => ({ buffer: flat[r.index]!.buffer, offset: r.offset, size: r.size });
        host[a!.index]!.set(factor(l, k, 'A', a!.size / 4), a!.offset / 4);
        host[b!.index]!.set(factor(l, k, 'B', b!.size / 4), b!.offset / 4);
        layer[p] = { A: range(params, a!), B: range(params, b!), dA: range(grads, a!), dB: range(grads, b!), inDim, outDim };
      }
      layers.push(layer);
    }
    host.forEach((h, i) => gpu.write(params[i]!.buffer, h));
  } catch (e) {
    for (const f of [...params, ...grads]) gpu.release(f.buffer);
    throw e;
  }
  return { layers, params, grads };
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
  // A drawn layer by layer, target by target, as PEFT draws it; B zero.
  const flat = allocFlat(gpu, c, s, (_l, k, f, count) => {
    const v = new Float32Array(count);
    if (f === 'B') return v;
    const bound = 1 / Math.sqrt(projectionDims(c, s.targets[k]!)[0]);
    for (let i = 0; i < count; i++) v[i] = (rand() * 2 - 1) * bound;
    return v;
  });
  return { config: c, settings: s, ...flat };
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
  const used = new Set<string>();
  const flat = allocFlat(gpu, c, settings, (l, k, f) => {
    const p = targets[k]!;
    const [inDim, outDim] = projectionDims(c, p);
    const shape = f === 'A' ? [rank, inDim] : [outDim, rank];
    const name = peftTensorName(c, l, p, f);
    const info = tensors.tensors.get(name);
    if (!info) throw fileError(file, `missing tensor ${name}`);
    if (info.shape.join(',') !== shape.join(',')) throw fileError(file, `${name} has shape [${info.shape}], expected [${shape}]`);
    used.add(name);
    const data = tensors.readF32(name);
    if (!data.every(Number.isFinite)) throw fileError(file, `${name} contains NaN or Inf`);
    return data;
  });
  const w: LoraWeights = { config: c, settings, ...flat };
  const extra = [...tensors.tensors.keys()].filter((n) => !used.has(n));
  if (extra.length) {
    releaseLora(gpu, w);
    throw fileError(file, `unexpected tensor ${extra[0]}${extra.length > 1 ? ` (and ${extra.length - 1} more)` : ''}`);
  }
  return w;
}

/** Every LoRA factor's values (or their gradients') by PEFT name: one read per flat buffer. */
export async function readLoraTensors(gpu: Gpu, w: LoraWeights, which: 'weights' | 'grads' = 'weights'): Promise<Map<string, Float32Array>> {
  const flat = which === 'weights' ? w.params : w.grads;
  const host = new Map<GPUBuffer, Float32Array>();
  for (const f of flat) host.set(f.buffer, await gpu.readF32(f.buffer, f.count));
  const out = new Map<string, Float32Array>();
  for (let l = 0; l < w.layers.length; l++) {
    for (const p of w.settings.targets) {
      const pair = w.layers[l]![p]!;
      for (const f of ['A', 'B'] as const) {
        const r = which === 'weights' ? pair[f] : pair[f === 'A' ? 'dA' : 'dB'];
        out.set(peftTensorName(w.config, l, p, f), host.get(r.buffer)!.slice(r.offset / 4, (r.offset + r.size) / 4));
      }
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
        const r = which === 'weights' ? pair[f] : pair[f === 'A' ? 'dA' : 'dB'];
        if (v.length * 4 !== r.size) throw new Error(`${name}: ${v.length} values, expected ${r.size / 4}`);
        gpu.write(r.buffer, v, r.offset);
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
  for (const f of [...w.params, ...w.grads]) gpu.release(f.buffer);
  w.layers = [];
  w.params = [];
  w.grads = [];
}
