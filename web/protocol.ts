// Messages between the page and the engine worker. Requests carry an id; the worker answers each with one
// 'result' or 'error' of the same id, and sends 'event's (progress, tokens) in between.

export type ModelSource =
  | { kind: 'default' }
  /** Files of a local Hugging Face folder: config.json, tokenizer files, *.safetensors (and an index). */
  | { kind: 'files'; files: File[] }
  /** A hub repo id, fetched from https://huggingface.co/<id>/resolve/main/<file>. */
  | { kind: 'hub'; repo: string };

export interface TrainSettings {
  rank: number;
  alpha: number;
  learningRate: number;
  steps: number;
  batchSize: number;
  /** Micro-batches per optimizer step. */
  gradientAccumulation: number;
  cutoffLen: number;
  template: 'qwen3' | 'qwen3_nothink';
  /** LoRA target modules (lora_target), e.g. ['q_proj', 'v_proj'] or ['all']. */
  targets: string[];
  seed: number;
}

export type Request =
  | { type: 'init' }
  | { type: 'loadModel'; source: ModelSource }
  | { type: 'train'; datasetText: string; datasetName: string; settings: TrainSettings }
  | { type: 'chat'; message: string; useAdapter: boolean; maxNewTokens: number }
  | { type: 'exportAdapter' }
  | { type: 'exportGguf'; quantization: 'q8_0' | 'q4_k_m' };

export interface GpuSummary {
  description: string;
  f16: boolean;
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

export interface ModelSummary {
  name: string;
  parameters: number;
  layers: number;
  hidden: number;
  vocab: number;
  weightBytes: number;
}

/** Sent at each logging step (about 50 per run), when the loss is read back. */
export interface TrainProgress {
  step: number;
  totalSteps: number;
  loss: number;
  tokensPerSecond: number;
  etaSeconds: number;
}

export interface TrainResult {
  firstLoss: number;
  finalLoss: number;
  steps: number;
  trainSamples: number;
  seqLen: number;
}

export interface DownloadFile {
  name: string;
  blob: Blob;
}

export type WorkerEvent =
  | { type: 'status'; text: string }
  | { type: 'progress'; progress: TrainProgress }
  | { type: 'token'; text: string };

export type Response =
  | { id: number; type: 'result'; value: unknown }
  | { id: number; type: 'error'; message: string; noWebGpu?: boolean }
  | { type: 'event'; event: WorkerEvent };
