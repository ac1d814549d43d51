// The GGUF contents of a model (or a LoRA adapter alone) for llama.cpp / Ollama: llama.cpp's tensor names (from
// the family description) and metadata keys for the family's general.architecture, the tokenizer metadata, and
// per-tensor types from the quantization preset. Tensors are read and converted one at a time when the writer reaches them.
// No Node API here (the browser demo exports with it); export.ts writes files.
import { UserError } from '../errors.js';
import type { ModelConfig } from '../model/family.js';
import { familyOf, modelParameterCount, modelTensors, type ModelTensor } from '../model/families.js';
import { GgmlType } from '../gpu/ggml-types.js';
import { sizeLabelOf, type GgufNaming } from './model-name.js';
import { presetFileType, tensorType, type GgufPreset } from './presets.js';
import { quantizeRows } from './quantize.js';
import { gv, type GgufTensorToWrite, type GgufValue, type GgufWriteOptions } from './gguf-encoder.js';

/** A named f32 tensor, read when the exporter reaches it. */
export interface SourceTensor {
  /** HF name, e.g. model.layers.0.self_attn.q_proj.weight. */
  name: string;
  /** HF (row-major) shape, e.g. [out, in]. */
  shape: number[];
  read(): Float32Array | Promise<Float32Array>;
}

/** The config's tensors by HF name (a tied model lists no lm_head). */
function tensorsByHfName(c: ModelConfig): Map<string, ModelTensor> {
  return new Map(modelTensors(c).map((t) => [t.hf, t]));
}

/** The general.* naming keys the converter writes (set_gguf_meta_model), those that are known. */
function namingMetadata(n: GgufNaming): [string, GgufValue][] {
  const entries: [string, string | undefined][] = [
    ['general.name', n.name], ['general.version', n.version], ['general.organization', n.organization],
    ['general.finetune', n.finetune], ['general.basename', n.basename], ['general.size_label', n.sizeLabel],
  ];
  return entries.filter((e): e is [string, string] => e[1] !== undefined).map(([k, v]) => [k, gv.str(v)]);
}

function modelMetadata(c: ModelConfig, naming: GgufNaming, fileType: number): [string, GgufValue][] {
  const arch = familyOf(c).ggufArchitecture;
  return [
    ['general.architecture', gv.str(arch)],
    ['general.type', gv.str('model')],
    ...namingMetadata(naming),
    [`${arch}.block_count`, gv.u32(c.numLayers)],
    [`${arch}.context_length`, gv.u32(c.maxPositionEmbeddings)],
    [`${arch}.embedding_length`, gv.u32(c.hiddenSize)],
    [`${arch}.feed_forward_length`, gv.u32(c.intermediateSize)],
    [`${arch}.attention.head_count`, gv.u32(c.numHeads)],
    [`${arch}.attention.head_count_kv`, gv.u32(c.numKvHeads)],
    [`${arch}.rope.freq_base`, gv.f32(c.ropeTheta)],
    [`${arch}.attention.layer_norm_rms_epsilon`, gv.f32(c.rmsNormEps)],
    [`${arch}.attention.key_length`, gv.u32(c.headDim)],
    [`${arch}.attention.value_length`, gv.u32(c.headDim)],
    ['general.file_type', gv.u32(fileType)],
    // GGML_QNT_VERSION; the converter writes it whatever the file type.
    ['general.quantization_version', gv.u32(2)],
  ];
}

/** Elements converted per chunk, so that only a slab of the output is in memory besides the source. */
const SLAB_ELEMENTS = 1 << 22;

/**
 * Quantizes slabs of whole rows off the exporting thread (in Node, QuantizePool's worker threads); without one
 * the exporter calls quantizeRows itself.
 */
export interface SlabQuantizer {
  quantize(type: GgmlType, slab: Float32Array, rowLength: number): Promise<Uint8Array>;
  /** Slabs the exporter keeps pending at once. */
  readonly inFlight: number;
  /** Elements per slab (rounded down to whole rows). */
  readonly slabElements: number;
}

/** The tensor's bytes in `type`, converted slab by slab of whole rows, in order. */
async function* convertedChunks(src: SourceTensor, type: GgmlType, rowLength: number, quantizer?: SlabQuantizer): AsyncGenerator<Uint8Array> {
  const data = await src.read();
  const count = src.shape.reduce((a, b) => a * b, 1);
  if (data.length !== count) throw new Error(`${src.name}: read() gave ${data.length} values, its shape [${src.shape}] has ${count}`);
  // F32 is a copy, not worth a trip to a worker.
  const parallel = type === GgmlType.F32 ? undefined : quantizer;
  const slabLength = Math.max(1, Math.floor((parallel?.slabElements ?? SLAB_ELEMENTS) / rowLength)) * rowLength;
  const pending: Promise<Uint8Array>[] = [];
  for (let start = 0; start < data.length; start += slabLength) {
    const slab = data.subarray(start, Math.min(data.length, start + slabLength));
    if (!parallel) {
      yield quantizeRows(type, slab, rowLength);
      continue;
    }
    const bytes = parallel.quantize(type, slab, rowLength);
    // A failure is thrown where its slab is awaited; later slabs' failures would otherwise be unhandled.
    bytes.catch(() => undefined);
    pending.push(bytes);
    if (pending.length >= parallel.inFlight) yield await pending.shift()!;
  }
  while (pending.length > 0) yield await pending.shift()!;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** ggml dims of an HF shape: reversed, so that ne[0] is the row length. */
const ggmlDims = (shape: readonly number[]): number[] => [...shape].reverse();

export interface ModelGgufOptions {
  config: ModelConfig;
  /** The tokenizer's metadata entries (tokenizerMetadata or tokenizerMetadataFromJson). */
  tokenizer: [string, GgufValue][];
  tensors: SourceTensor[];
  quantization: GgufPreset;
  /** general.name (with the size label from the parameter count); defaults to the family's name. Ignored when `naming` is given. */
  name?: string;
  /** general.name, basename, size_label, ... (ggufNaming); without it general.name alone. */
  naming?: GgufNaming;
  /** Quantizes slabs in parallel; by default quantizeRows on this thread. */
  quantizer?: SlabQuantizer;
}

/** The metadata and tensors of a model's GGUF, which llama.cpp loads. */
export function modelGguf(o: ModelGgufOptions): Pick<GgufWriteOptions, 'metadata' | 'tensors'> {
  const c = o.config;
  const family = familyOf(c);
  const expected = tensorsByHfName(c);
  const sources = new Map<string, SourceTensor>();
  for (const t of o.tensors) {
    // A tied model has no separate output matrix, whatever the source lists.
    if (t.name === family.lmHead.hf && c.tieWordEmbeddings) continue;
    const want = expected.get(t.name);
    if (!want) throw new UserError(`cannot export tensor ${t.name}: not a weight of this ${family.displayName} model (${c.numLayers} layers)`);
    if (sources.has(want.gguf)) throw new UserError(`tensor ${t.name} is given twice`);
    if (!sameShape(t.shape, want.shape)) throw new UserError(`tensor ${t.name} has shape [${t.shape}], the config needs [${want.shape}]`);
    sources.set(want.gguf, t);
  }
  for (const t of expected.values()) if (!sources.has(t.gguf)) throw new UserError(`cannot export: the model has no tensor for ${t.gguf}`);

  const hasOutput = sources.has(family.lmHead.gguf);
  const tensors: GgufTensorToWrite[] = [];
  for (const [name, src] of sources) {
    const ne = ggmlDims(src.shape);
    const type = tensorType(o.quantization, { name, ne }, hasOutput, c.numLayers);
    tensors.push({ name, ne, type, data: () => convertedChunks(src, type, ne[0]!, o.quantizer) });
  }
  const metadata = new Map<string, GgufValue>([
    ...modelMetadata(c, o.naming ?? { name: o.name ?? family.displayName, sizeLabel: sizeLabelOf(modelParameterCount(c)) }, presetFileType(o.quantization)),
    ...o.tokenizer,
  ]);
  return { metadata, tensors };
}

export interface LoraGgufOptions {
  config: ModelConfig;
  /** PEFT tensors: base_model.model.model.layers.N.<module>.lora_A.weight [r, in] and lora_B.weight [out, r]. */
  tensors: SourceTensor[];
  /** lora_alpha from adapter_config.json (llama.cpp scales by alpha / r). */
  alpha: number;
  /** Storage type of the adapter matrices; f32 by default. */
  type?: 'f32' | 'f16' | 'bf16';
  name?: string;
}

const LORA_TYPES = { f32: GgmlType.F32, f16: GgmlType.F16, bf16: GgmlType.BF16 } as const;

/**
 * A PEFT LoRA adapter as a llama.cpp LoRA GGUF (as convert_lora_to_gguf.py does):
 * general.type "adapter", adapter.type "lora", adapter.lora.alpha, and for each adapted weight W
 * `<W>.lora_a` with ne [in, r] and `<W>.lora_b` with ne [r, out] (PEFT's matrices, dims reversed).
 */
export function loraGguf(o: LoraGgufOptions): Pick<GgufWriteOptions, 'metadata' | 'tensors'> {
  const c = o.config;
  const type = LORA_TYPES[o.type ?? 'f32'];
  // The adapted weights by the PEFT module path (model.layers.N.self_attn.q_proj).
  const projections = new Map(modelTensors(c).filter((t) => t.projection).map((t) => [t.hf.replace(/\.weight$/, ''), t]));
  const pairs = new Map<ModelTensor, { a?: SourceTensor; b?: SourceTensor }>();
  for (const t of o.tensors) {
    const m = /^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(t.name);
    const base = m && projections.get(m[1]!);
    if (!m || !base) throw new UserError(`cannot export adapter tensor ${t.name}: not a LoRA matrix of a ${familyOf(c).displayName} projection`);
    const pair = pairs.get(base) ?? {};
    if (m[2] === 'A') pair.a = t;
    else pair.b = t;
    pairs.set(base, pair);
  }
  const tensors: GgufTensorToWrite[] = [];
  for (const [{ gguf: base, shape }, { a, b }] of pairs) {
    if (!a || !b) throw new UserError(`adapter has lora_${a ? 'B' : 'A'} missing for ${base}`);
    const [out, inp] = shape as [number, number];
    const r = a.shape[0]!;
    if (!sameShape(a.shape, [r, inp]) || !sameShape(b.shape, [out, r])) {
      throw new UserError(`adapter for ${base}: lora_A [${a.shape}] and lora_B [${b.shape}] do not fit the weight [${out}, ${inp}]`);
    }
    for (const [src, suffix] of [[a, 'lora_a'], [b, 'lora_b']] as const) {
      const ne = ggmlDims(src.shape);
      tensors.push({ name: `${base}.${suffix}`, ne, type, data: () => convertedChunks(src, type, ne[0]!) });
    }
  }
  const metadata = new Map<string, GgufValue>([
    ['general.architecture', gv.str(familyOf(c).ggufArchitecture)],
    ['general.type', gv.str('adapter')],
    ['general.name', gv.str(o.name ?? 'LoRA adapter')],
    ['adapter.type', gv.str('lora')],
    ['adapter.lora.alpha', gv.f32(o.alpha)],
  ]);
  return { metadata, tensors };
}
