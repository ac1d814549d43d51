// The GGUF contents of a Qwen3 model (or a LoRA adapter alone) for llama.cpp / Ollama: llama.cpp's tensor
// names and metadata keys for general.architecture = qwen3, the tokenizer metadata, and per-tensor types
// from the quantization preset. Tensors are read and converted one at a time when the writer reaches them.
// No Node API here (the browser demo exports with it); export.ts writes files.
import { UserError } from '../errors.js';
import type { Qwen3Config } from '../model/qwen3-config.js';
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

const LAYER_SUFFIXES: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight',
  'self_attn.k_proj.weight': 'attn_k.weight',
  'self_attn.v_proj.weight': 'attn_v.weight',
  'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.q_norm.weight': 'attn_q_norm.weight',
  'self_attn.k_norm.weight': 'attn_k_norm.weight',
  'post_attention_layernorm.weight': 'ffn_norm.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight',
  'mlp.up_proj.weight': 'ffn_up.weight',
  'mlp.down_proj.weight': 'ffn_down.weight',
};

const GLOBAL_NAMES: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
};

/** llama.cpp's name for an HF Qwen3 tensor name, or undefined for a name that is not a Qwen3 weight. */
export function ggufTensorName(hfName: string): string | undefined {
  const global = GLOBAL_NAMES[hfName];
  if (global) return global;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  const suffix = m && LAYER_SUFFIXES[m[2]!];
  return suffix ? `blk.${m[1]}.${suffix}` : undefined;
}

/** The HF shape every Qwen3 weight must have under `c`, by GGUF name. */
function expectedShape(c: Qwen3Config, ggufName: string): number[] {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const shapes: Record<string, number[]> = {
    'token_embd.weight': [c.vocabSize, H],
    'output.weight': [c.vocabSize, H],
    'output_norm.weight': [H],
    'attn_norm.weight': [H],
    'attn_q.weight': [q, H],
    'attn_k.weight': [kv, H],
    'attn_v.weight': [kv, H],
    'attn_output.weight': [H, q],
    'attn_q_norm.weight': [c.headDim],
    'attn_k_norm.weight': [c.headDim],
    'ffn_norm.weight': [H],
    'ffn_gate.weight': [I, H],
    'ffn_up.weight': [I, H],
    'ffn_down.weight': [H, I],
  };
  return shapes[ggufName.replace(/^blk\.\d+\./, '')]!;
}

/** The general.* naming keys the converter writes (set_gguf_meta_model), those that are known. */
function namingMetadata(n: GgufNaming): [string, GgufValue][] {
  const entries: [string, string | undefined][] = [
    ['general.name', n.name], ['general.version', n.version], ['general.organization', n.organization],
    ['general.finetune', n.finetune], ['general.basename', n.basename], ['general.size_label', n.sizeLabel],
  ];
  return entries.filter((e): e is [string, string] => e[1] !== undefined).map(([k, v]) => [k, gv.str(v)]);
}

/** Weights in a Qwen3 GGUF under `c` (the embeddings once when tied), for the size label. */
export function qwen3ParameterCount(c: Qwen3Config): number {
  const names = ['token_embd.weight', 'output_norm.weight', ...(c.tieWordEmbeddings ? [] : ['output.weight'])];
  let count = names.reduce((n, name) => n + expectedShape(c, name).reduce((a, b) => a * b, 1), 0);
  for (const s of Object.values(LAYER_SUFFIXES)) count += c.numLayers * expectedShape(c, s).reduce((a, b) => a * b, 1);
  return count;
}

function qwen3ModelMetadata(c: Qwen3Config, naming: GgufNaming, fileType: number): [string, GgufValue][] {
  return [
    ['general.architecture', gv.str('qwen3')],
    ['general.type', gv.str('model')],
    ...namingMetadata(naming),
    ['qwen3.block_count', gv.u32(c.numLayers)],
    ['qwen3.context_length', gv.u32(c.maxPositionEmbeddings)],
    ['qwen3.embedding_length', gv.u32(c.hiddenSize)],
    ['qwen3.feed_forward_length', gv.u32(c.intermediateSize)],
    ['qwen3.attention.head_count', gv.u32(c.numHeads)],
    ['qwen3.attention.head_count_kv', gv.u32(c.numKvHeads)],
    ['qwen3.rope.freq_base', gv.f32(c.ropeTheta)],
    ['qwen3.attention.layer_norm_rms_epsilon', gv.f32(c.rmsNormEps)],
    ['qwen3.attention.key_length', gv.u32(c.headDim)],
    ['qwen3.attention.value_length', gv.u32(c.headDim)],
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

export interface Qwen3GgufOptions {
  config: Qwen3Config;
  /** The tokenizer's metadata entries (tokenizerMetadata or tokenizerMetadataFromJson). */
  tokenizer: [string, GgufValue][];
  tensors: SourceTensor[];
  quantization: GgufPreset;
  /** general.name (with the size label from the parameter count); defaults to "Qwen3". Ignored when `naming` is given. */
  name?: string;
  /** general.name, basename, size_label, ... (ggufNaming); without it general.name alone. */
  naming?: GgufNaming;
  /** Quantizes slabs in parallel; by default quantizeRows on this thread. */
  quantizer?: SlabQuantizer;
}

/** The metadata and tensors of a Qwen3 model's GGUF, which llama.cpp loads. */
export function qwen3Gguf(o: Qwen3GgufOptions): Pick<GgufWriteOptions, 'metadata' | 'tensors'> {
  const c = o.config;
  const sources = new Map<string, SourceTensor>();
  for (const t of o.tensors) {
    const name = ggufTensorName(t.name);
    if (name === undefined) throw new UserError(`cannot export tensor ${t.name}: not a Qwen3 weight`);
    // A tied model has no separate output matrix, whatever the source lists.
    if (name === 'output.weight' && c.tieWordEmbeddings) continue;
    if (sources.has(name)) throw new UserError(`tensor ${t.name} is given twice`);
    const shape = expectedShape(c, name);
    if (!sameShape(t.shape, shape)) throw new UserError(`tensor ${t.name} has shape [${t.shape}], the config needs [${shape}]`);
    sources.set(name, t);
  }
  const required = ['token_embd.weight', 'output_norm.weight', ...(c.tieWordEmbeddings ? [] : ['output.weight'])];
  for (let l = 0; l < c.numLayers; l++) for (const s of Object.values(LAYER_SUFFIXES)) required.push(`blk.${l}.${s}`);
  for (const name of required) if (!sources.has(name)) throw new UserError(`cannot export: the model has no tensor for ${name}`);
  if (sources.size !== required.length) {
    const extra = [...sources.keys()].filter((n) => !required.includes(n));
    throw new UserError(`cannot export: tensors beyond the config's ${c.numLayers} layers: ${extra.slice(0, 3).join(', ')}`);
  }

  const hasOutput = sources.has('output.weight');
  const tensors: GgufTensorToWrite[] = [];
  for (const [name, src] of sources) {
    const ne = ggmlDims(src.shape);
    const type = tensorType(o.quantization, { name, ne }, hasOutput, c.numLayers);
    tensors.push({ name, ne, type, data: () => convertedChunks(src, type, ne[0]!, o.quantizer) });
  }
  const metadata = new Map<string, GgufValue>([
    ...qwen3ModelMetadata(c, o.naming ?? { name: o.name ?? 'Qwen3', sizeLabel: sizeLabelOf(qwen3ParameterCount(c)) }, presetFileType(o.quantization)),
    ...o.tokenizer,
  ]);
  return { metadata, tensors };
}

export interface LoraGgufOptions {
  config: Qwen3Config;
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
  const pairs = new Map<string, { a?: SourceTensor; b?: SourceTensor }>();
  for (const t of o.tensors) {
    const m = /^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(t.name);
    const base = m && ggufTensorName(`${m[1]}.weight`);
    if (!m || !base || !/^blk\.\d+\.(attn_[qkvo]|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$/.test(base)) {
      throw new UserError(`cannot export adapter tensor ${t.name}: not a LoRA matrix of a Qwen3 projection`);
    }
    const pair = pairs.get(base) ?? {};
    if (m[2] === 'A') pair.a = t;
    else pair.b = t;
    pairs.set(base, pair);
  }
  const tensors: GgufTensorToWrite[] = [];
  for (const [base, { a, b }] of pairs) {
    if (!a || !b) throw new UserError(`adapter has lora_${a ? 'B' : 'A'} missing for ${base}`);
    const [out, inp] = expectedShape(c, base) as [number, number];
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
    ['general.architecture', gv.str('qwen3')],
    ['general.type', gv.str('adapter')],
    ['general.name', gv.str(o.name ?? 'LoRA adapter')],
    ['adapter.type', gv.str('lora')],
    ['adapter.lora.alpha', gv.f32(o.alpha)],
  ]);
  return { metadata, tensors };
}
