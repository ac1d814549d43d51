// The engine in a dedicated worker: WebGPU device, model, LoRA training, chat and exports. The page only draws.
/// <reference lib="webworker" />
import { createGpu, NoWebGpuError, type Gpu } from '../src/gpu/device.js';
import { UserError } from '../src/errors.js';
import { parseModelConfig, type ModelConfig } from '../src/model/model-config.js';
import { memorySource, SafetensorsReader } from '../src/model/safetensors-format.js';
import { loadModelWeights, releaseModelWeights, type ModelWeights } from '../src/model/weights.js';
import { modelTensorShapes } from '../src/model/families.js';
import { JsonTokenizer } from '../src/model/tokenizer-json.js';
import { Generator, PREFILL_CHUNK } from '../src/model/generate.js';
import { chatStopIds, generateText } from '../src/model/chat.js';
import { conversationsFromText } from '../src/train/dataset-format.js';
import { layoutData, microBatch, planSteps, type PreparedData } from '../src/train/prepare.js';
import { LoraTrainer } from '../src/train/trainer.js';
import { trainSteps, type LoopResult } from '../src/train/loop.js';
import { initLora, releaseLora, serializePeftAdapter, type LoraWeights } from '../src/train/lora-weights.js';
import { parseLoraTargets } from '../src/model/families.js';
import { learningRate } from '../src/train/schedule.js';
import { modelGguf } from '../src/gguf/model-gguf.js';
import { tokenizerMetadataFromJson } from '../src/gguf/tokenizer-gguf.js';
import { writeGgufTo } from '../src/gguf/gguf-encoder.js';
import { mergedTensorSources } from '../src/gguf/merge.js';
import { DEFAULT_CONFIG, DEFAULT_MODEL_NAME, defaultModelSafetensors, defaultTokenizerFiles } from './default-model.js';
import { blobSource, fetchHubRepo, filesByName, openCheckpoint, readJsonFile, type ModelFiles } from './model-source.js';
import { readGguf, type GgufFile } from '../src/model/gguf-format.js';
import { ggufModelConfig, loadGgufWeights } from '../src/model/gguf-model.js';
import { tokenizerFilesFromGguf } from '../src/model/gguf-tokenizer.js';
import { checkMemory, estimateTrainingMemory } from '../src/train/memory-plan.js';
import { tuneForJob } from '../src/train/kernel-tuning.js';
import { memoryTuningStore } from '../src/kernels/tune.js';

const tuningStore = memoryTuningStore();
import type { DownloadFile, GpuSummary, ModelSource, ModelSummary, Request, Response, TrainResult, TrainSettings, WorkerEvent } from './protocol.js';

declare const self: DedicatedWorkerGlobalScope;

interface LoadedModel {
  name: string;
  config: ModelConfig;
  tokenizer: JsonTokenizer;
  /** The base's file(s): an HF checkpoint, or a GGUF kept in its own (quantized) types on the GPU. */
  checkpoint?: SafetensorsReader;
  gguf?: GgufFile;
  weights: ModelWeights;
}

let gpu: Gpu | undefined;
let model: LoadedModel | undefined;
let lora: LoraWeights | undefined;
let trainedTemplate: TrainSettings['template'] = 'qwen3_nothink';
let stopRequested = false;
/** Longest chat prompt + answer, in tokens (the KV cache is sized by it). */
const CHAT_TOKENS = 256;

const emit = (event: WorkerEvent) => self.postMessage({ type: 'event', event } satisfies Response);
const status = (text: string) => emit({ type: 'status', text });

/** Run `work` and turn a WebGPU out-of-memory error during it into a clear refusal. */
async function guardMemory<T>(what: string, work: () => T | Promise<T>): Promise<T> {
  const device = gpu!.device;
  device.pushErrorScope('out-of-memory');
  let result: T;
  try {
    result = await work();
  } finally {
    const error = await device.popErrorScope();
    if (error) throw new UserError(`${what}: the GPU ran out of memory (${error.message}); try a smaller model, batch or cutoff length`);
  }
  return result;
}

async function init(): Promise<GpuSummary> {
  gpu ??= await createGpu();
  const l = gpu.device.limits;
  const info = gpu.adapterInfo;
  return {
    description: [info.vendor, info.architecture, info.description].filter(Boolean).join(' / ') || 'WebGPU adapter',
    f16: gpu.features.f16,
    maxBufferSize: l.maxBufferSize,
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
  };
}

function unloadModel(): void {
  if (lora) releaseLora(gpu!, lora);
  lora = undefined;
  if (model) {
    releaseModelWeights(gpu!, model.weights);
    model.checkpoint?.close();
  }
  model = undefined;
}

async function openFiles(files: ModelFiles, name: string): Promise<Omit<LoadedModel, 'weights'>> {
  // A dropped GGUF (or a folder holding one and no config.json): config and tokenizer from its metadata.
  const ggufName = [...files.keys()].find((n) => n.toLowerCase().endsWith('.gguf'));
  if (ggufName && !files.has('config.json')) {
    const gguf = readGguf(blobSource(files.get(ggufName)!), ggufName);
    const t = tokenizerFilesFromGguf(gguf);
    return { name: ggufName.replace(/\.gguf$/i, ''), config: ggufModelConfig(gguf), tokenizer: JsonTokenizer.fromJson(t.json, t.config, ggufName), gguf };
  }
  const config = parseModelConfig(await readJsonFile(files, 'config.json', true), 'config.json');
  const tokenizerJson = await readJsonFile(files, 'tokenizer.json', true);
  const tokenizerConfig = (await readJsonFile(files, 'tokenizer_config.json', false)) ?? {};
  const tokenizer = JsonTokenizer.fromJson(tokenizerJson, tokenizerConfig, 'tokenizer.json');
  return { name, config, tokenizer, checkpoint: await openCheckpoint(files, name) };
}

async function loadModel(source: ModelSource): Promise<ModelSummary> {
  const g = gpu ?? (await createGpu());
  gpu = g;
  unloadModel();
  let opened: Omit<LoadedModel, 'weights'>;
  if (source.kind === 'default') {
    status('generating the default model');
    const files = defaultTokenizerFiles();
    const checkpoint = new SafetensorsReader(DEFAULT_MODEL_NAME);
    checkpoint.addFile('model.safetensors', memorySource(defaultModelSafetensors()));
    opened = { name: DEFAULT_MODEL_NAME, config: DEFAULT_CONFIG, tokenizer: JsonTokenizer.fromJson(files.tokenizer, files.config, 'default tokenizer'), checkpoint };
  } else if (source.kind === 'files') {
    const files = filesByName(source.files);
    const folder = source.files[0]?.webkitRelativePath.split('/')[0] || 'local model';
    opened = await openFiles(files, folder);
  } else {
    opened = await openFiles(await fetchHubRepo(source.repo, status), source.repo);
  }
  const c = opened.config;
  if (opened.gguf) {
    const gguf = opened.gguf;
    status(`uploading ${opened.name} to the GPU (as stored in the GGUF)`);
    const weights = await guardMemory('loading the model', () => loadGgufWeights(g, gguf, c, 'bf16'));
    model = { ...opened, weights };
    return summary(opened.name, c, g);
  }
  const checkpoint = opened.checkpoint!;
  // Half-precision checkpoints stay bf16 on the GPU (half the memory); f32 ones stay f32.
  const stored = [...checkpoint.tensors.values()].map((t) => t.dtype);
  const dtype = stored.some((d) => d === 'BF16' || d === 'F16') && c.hiddenSize % 2 === 0 ? 'bf16' : 'f32';
  const limit = Math.min(g.device.limits.maxBufferSize, g.maxBindingBytes);
  const widest = Math.max(c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim) * (dtype === 'bf16' ? 2 : 4);
  if (widest > limit) throw new UserError(`one weight row of ${widest} bytes does not fit this GPU's ${limit}-byte binding`);
  status(`uploading ${opened.name} to the GPU (${dtype})`);
  const weights = await guardMemory('loading the model', () => loadModelWeights(g, checkpoint, c, dtype));
  model = { ...opened, weights };
  return summary(opened.name, c, g);
}

function summary(name: string, c: ModelConfig, g: Gpu): ModelSummary {
  let parameters = 0;
  for (const [, shape] of modelTensorShapes(c)) parameters += shape.reduce((a, b) => a * b, 1);
  return { name, parameters, layers: c.numLayers, hidden: c.hiddenSize, vocab: c.vocabSize, weightBytes: g.liveBytes };
}

const MiB = 1024 * 1024;
const formatBytes = (n: number): string => (n >= 1024 * MiB ? `${(n / 1024 / MiB).toFixed(2)} GiB` : `${(n / MiB).toFixed(1)} MiB`);

async function train(datasetText: string, datasetName: string, s: TrainSettings): Promise<TrainResult> {
  const g = gpu!;
  const m = model;
  if (!m) throw new UserError('load a model first');
  const conversations = conversationsFromText(datasetText, datasetName);
  const cfg = {
    dataset: datasetName, cutoff_len: s.cutoffLen, template: s.template, train_on_prompt: false, enable_thinking: true,
    val_size: 0, seed: s.seed, packing: false, neat_packing: false,
  };
  const data: PreparedData = layoutData(conversations, undefined, cfg, m.tokenizer, m.config);
  const plan = planSteps({
    per_device_train_batch_size: s.batchSize, gradient_accumulation_steps: s.gradientAccumulation, max_steps: s.steps, num_train_epochs: 1, warmup_steps: 0, warmup_ratio: 0,
  }, data);
  const targets = parseLoraTargets(s.targets);
  const recompute = m.config.numLayers * m.config.hiddenSize > 4096;
  const weightDtype = m.weights.embed.dtype;
  const memory = estimateTrainingMemory(m.config, { B: s.batchSize, T: data.T, rank: s.rank, targets, recompute, weightDtype, maxBindingBytes: g.maxBindingBytes });
  // Refuses buffers over the adapter's maxBufferSize / maxStorageBufferBindingSize. Browsers do not tell the total
  // GPU memory, so there is no budget: an allocation that fails anyway is caught by guardMemory below.
  checkMemory(memory, g, { budget: Number.POSITIVE_INFINITY, recompute, weightDtype });
  status(`training on ${data.train.length} samples of ${data.T} tokens, about ${formatBytes(memory.total)} of GPU memory`);

  if (lora) releaseLora(g, lora);
  lora = undefined;
  const adapter = initLora(g, m.config, { rank: s.rank, alpha: s.alpha, rslora: false, dropout: 0, targets }, s.seed);
  lora = adapter;
  // Kernel choices for this GPU (kept in memory for the worker's life: workers have no localStorage).
  await tuneForJob(g, m.config, s.batchSize * data.T, weightDtype, { enabled: true, matrix: true, store: tuningStore });
  const trainer = await guardMemory('setting up training', () => new LoraTrainer(g, m.config, m.weights, adapter, {
    B: s.batchSize, T: data.T, recompute, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 },
  }));
  const schedule = { type: 'cosine' as const, baseLr: s.learningRate, warmupSteps: 0, totalSteps: plan.totalSteps };
  const started = performance.now();
  stopRequested = false;
  let result: LoopResult;
  try {
    result = await trainSteps(trainer, {
      totalSteps: plan.totalSteps, microPerStep: plan.microPerStep, perEpoch: plan.perEpoch,
      // The chart gets about 50 points: the loss is read back at logging steps only.
      logEvery: Math.max(1, Math.ceil(plan.totalSteps / 50)),
      microBatch: (m) => microBatch(data, s.batchSize, s.seed, m),
      learningRate: (step) => learningRate(step, schedule),
    }, {
      stop: () => stopRequested,
      onLog: (entry) => {
        const seconds = (performance.now() - started) / 1000;
        const done = entry.current_steps;
        emit({ type: 'progress', progress: {
          step: done, totalSteps: plan.totalSteps, loss: entry.loss, tokensPerSecond: entry.tokens_per_second, etaSeconds: (seconds / done) * (plan.totalSteps - done),
        } });
      },
    });
  } finally {
    trainer.destroy();
  }
  const losses = result.log.map((e) => e.loss);
  trainedTemplate = s.template;
  return { firstLoss: losses[0] ?? NaN, finalLoss: losses.at(-1) ?? NaN, steps: result.steps, trainSamples: data.train.length, seqLen: data.T };
}

async function chat(message: string, useAdapter: boolean, maxNewTokens: number): Promise<string> {
  const g = gpu!;
  const m = model;
  if (!m) throw new UserError('load a model first');
  if (useAdapter && !lora) throw new UserError('train an adapter first (or chat with the adapter off)');
  const tok = m.tokenizer;
  const messages = [{ role: 'user' as const, content: message }];
  // Answer as trained: qwen3_nothink answers carry no thought block, so the prompt skips thinking.
  const text = tok.chatTemplate
    ? tok.applyChatTemplate(messages, { addGenerationPrompt: true, enableThinking: trainedTemplate === 'qwen3_nothink' ? false : undefined })
    : `<|im_start|>user\n${message}<|im_end|>\n<|im_start|>assistant\n`;
  const prompt = tok.encode(text);
  if (prompt.length + maxNewTokens > CHAT_TOKENS) throw new UserError(`the message is ${prompt.length} tokens; keep prompt and answer under ${CHAT_TOKENS}`);
  // The prefill runs in chunks of PREFILL_CHUNK tokens: its logits [chunk, vocab] are the largest buffer it adds.
  const maxLen = prompt.length + maxNewTokens + 1;
  const logitsBytes = Math.min(PREFILL_CHUNK, maxLen) * m.config.vocabSize * 4;
  if (logitsBytes > Math.min(g.maxBindingBytes, g.device.limits.maxBufferSize)) {
    throw new UserError(`the prefill's logits need ${formatBytes(logitsBytes)} in one buffer, more than this GPU binds (vocabulary of ${m.config.vocabSize})`);
  }
  const generator = new Generator(g, m.config, m.weights, useAdapter ? lora : undefined, maxLen);
  try {
    const sampling = { maxNewTokens, temperature: 0, topK: 0, topP: 1, seed: 0, stopIds: chatStopIds(tok) };
    return await generateText(generator, tok, prompt, sampling, (text) => emit({ type: 'token', text }));
  } finally {
    generator.destroy();
  }
}

async function exportAdapter(): Promise<DownloadFile[]> {
  if (!lora || !model) throw new UserError('train an adapter first');
  const { safetensors, config } = await serializePeftAdapter(gpu!, lora, model.name);
  return [
    { name: 'adapter_model.safetensors', blob: new Blob([safetensors as Uint8Array<ArrayBuffer>]) },
    { name: 'adapter_config.json', blob: new Blob([config], { type: 'application/json' }) },
  ];
}

async function exportGguf(quantization: 'q8_0' | 'q4_k_m'): Promise<DownloadFile[]> {
  const m = model;
  if (!m) throw new UserError('load a model first');
  if (!m.checkpoint) throw new UserError('a GGUF base is not merged here: download the PEFT adapter (the CLI exports it as a LoRA GGUF for the same file)');
  const tensors = await mergedTensorSources(gpu!, m.checkpoint, m.config, lora);
  const tokenizer = tokenizerMetadataFromJson({
    tokenizer: m.tokenizer.json, tokenizerFile: 'tokenizer.json', config: m.tokenizer.config, configFile: 'tokenizer_config.json',
  }, m.config);
  const contents = modelGguf({ config: m.config, tokenizer, tensors, quantization, name: `${m.name}${lora ? ' + LoRA' : ''}` });
  const parts: Uint8Array<ArrayBuffer>[] = [];
  await writeGgufTo({ write: (bytes) => void parts.push(bytes.slice()) }, {
    ...contents,
    onProgress: (done, total) => status(`writing GGUF ${Math.round((100 * done) / Math.max(1, total))}%`),
  });
  const safeName = m.name.replace(/[^\w.-]+/g, '-').replace(/^-+|-+$/g, '') || 'model';
  return [{ name: `${safeName}${lora ? '-lora' : ''}-${quantization}.gguf`, blob: new Blob(parts) }];
}

async function handle(req: Request): Promise<unknown> {
  switch (req.type) {
    case 'init': return init();
    case 'loadModel': return loadModel(req.source);
    case 'train': return train(req.datasetText, req.datasetName, req.settings);
    case 'chat': return chat(req.message, req.useAdapter, req.maxNewTokens);
    case 'exportAdapter': return exportAdapter();
    case 'exportGguf': return exportGguf(req.quantization);
  }
}

self.onmessage = async (e: MessageEvent<{ id: number; request: Request } | { type: 'stop' }>) => {
  const data = e.data;
  if ('type' in data) {
    stopRequested = true;
    return;
  }
  try {
    self.postMessage({ id: data.id, type: 'result', value: await handle(data.request) } satisfies Response);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    self.postMessage({ id: data.id, type: 'error', message, noWebGpu: err instanceof NoWebGpuError } satisfies Response);
  }
};
