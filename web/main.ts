// The page: controls and drawing only. Every engine call goes to the worker (worker.ts), which owns the GPU.
import defaultDataset from './default-dataset.json?raw';
import { drawLossChart } from './loss-chart.js';
import type { DownloadFile, GpuSummary, ModelSource, ModelSummary, Request, Response, TrainResult, TrainSettings, WorkerEvent } from './protocol.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });

let nextId = 1;
const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
let onEvent: (e: WorkerEvent) => void = () => undefined;

worker.onmessage = (e: MessageEvent<Response>) => {
  const msg = e.data;
  if (msg.type === 'event') return onEvent(msg.event);
  const waiter = pending.get(msg.id);
  pending.delete(msg.id);
  if (msg.type === 'result') waiter?.resolve(msg.value);
  else waiter?.reject(Object.assign(new Error(msg.message), { noWebGpu: msg.noWebGpu }));
};

function call<T>(request: Request): Promise<T> {
  const id = nextId++;
  return new Promise<T>((resolve, reject) => {
    pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    worker.postMessage({ id, request });
  });
}

function setStatus(id: string, text: string, error = false): void {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle('error', error);
}

const buttons = ['load-model', 'train', 'send', 'download-adapter', 'download-gguf'];
let hasModel = false;
let hasAdapter = false;
/** Disable everything while the worker is busy; enable what makes sense after. */
function setBusy(busy: boolean): void {
  const enabled: Record<string, boolean> = {
    'load-model': true, train: hasModel, send: hasModel, 'download-adapter': hasAdapter, 'download-gguf': hasModel,
  };
  for (const id of buttons) $<HTMLButtonElement>(id).disabled = busy || !enabled[id];
  $<HTMLButtonElement>('stop').disabled = true;
}

/** Where the worker's status lines go: the section of the running action. */
let statusTarget = 'model-status';

async function busy<T>(statusId: string, work: () => Promise<T>): Promise<T | undefined> {
  statusTarget = statusId;
  setBusy(true);
  try {
    return await work();
  } catch (e) {
    setStatus(statusId, (e as Error).message, true);
    return undefined;
  } finally {
    setBusy(false);
  }
}

function download(files: DownloadFile[]): void {
  for (const f of files) {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(f.blob);
    a.download = f.name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  }
}

// --- model ---
let droppedModelFiles: File[] = [];
const kind = () => (document.querySelector('input[name="model-kind"]:checked') as HTMLInputElement).value;

function modelSource(): ModelSource {
  if (kind() === 'hub') return { kind: 'hub', repo: $<HTMLInputElement>('hub-repo').value.trim() };
  if (kind() === 'files') {
    const picked = [...($<HTMLInputElement>('model-folder').files ?? [])];
    return { kind: 'files', files: picked.length ? picked : droppedModelFiles };
  }
  return { kind: 'default' };
}

function selectKind(value: string): void {
  (document.querySelector(`input[name="model-kind"][value="${value}"]`) as HTMLInputElement).checked = true;
}

$('model-folder').addEventListener('change', () => selectKind('files'));
$('hub-repo').addEventListener('input', () => selectKind('hub'));

/** Files of dropped folders and files (folders are walked). */
async function droppedFiles(items: DataTransferItemList): Promise<File[]> {
  const out: File[] = [];
  const walk = async (entry: FileSystemEntry): Promise<void> => {
    if (entry.isFile) out.push(await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej)));
    else if (entry.isDirectory) {
      const reader = (entry as FileSystemDirectoryEntry).createReader();
      for (;;) {
        const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child);
      }
    }
  };
  const entries = [...items].map((i) => i.webkitGetAsEntry()).filter((e): e is FileSystemEntry => e !== null);
  for (const entry of entries) await walk(entry);
  return out;
}

function dropZone(el: HTMLElement, onDrop: (e: DragEvent) => void): void {
  el.addEventListener('dragover', (e) => {
    e.preventDefault();
    el.classList.add('over');
  });
  el.addEventListener('dragleave', () => el.classList.remove('over'));
  el.addEventListener('drop', (e) => {
    e.preventDefault();
    el.classList.remove('over');
    onDrop(e);
  });
}

dropZone($('model-drop'), async (e) => {
  if (!e.dataTransfer) return;
  droppedModelFiles = await droppedFiles(e.dataTransfer.items);
  $('model-drop').textContent = `${droppedModelFiles.length} files: ${droppedModelFiles.map((f) => f.name).join(', ')}`;
  selectKind('files');
});

$('load-model').addEventListener('click', () => void busy('model-status', async () => {
  const source = modelSource();
  setStatus('model-status', 'loading…');
  hasModel = false;
  hasAdapter = false;
  const m = await call<ModelSummary>({ type: 'loadModel', source });
  hasModel = true;
  setStatus('model-status', `${m.name}: ${(m.parameters / 1e6).toFixed(2)}M parameters, ${m.layers} layers, hidden ${m.hidden}, vocab ${m.vocab}, ` +
    `${(m.weightBytes / 2 ** 20).toFixed(1)} MiB on the GPU`);
}));

// --- dataset ---
let datasetName = 'parity.json';
const datasetArea = $<HTMLTextAreaElement>('dataset');
datasetArea.value = defaultDataset;
datasetArea.addEventListener('input', () => {
  if (!datasetName.endsWith('(edited)')) datasetName = `${datasetName} (edited)`;
  setStatus('dataset-name', datasetName);
});
async function useDatasetFile(file: File): Promise<void> {
  datasetArea.value = await file.text();
  datasetName = file.name;
  setStatus('dataset-name', `from file: ${file.name}`);
}
$<HTMLInputElement>('dataset-file').addEventListener('change', (e) => {
  const file = (e.target as HTMLInputElement).files?.[0];
  if (file) void useDatasetFile(file);
});
dropZone(datasetArea, (e) => {
  const file = e.dataTransfer?.files[0];
  if (file) void useDatasetFile(file);
});

// --- training ---
const num = (id: string) => Number($<HTMLInputElement>(id).value);
function trainSettings(): TrainSettings {
  const targets = $<HTMLInputElement>('targets').value.split(',').map((s) => s.trim()).filter(Boolean);
  return {
    rank: num('rank'), alpha: num('alpha'), learningRate: num('lr'), steps: num('steps'), batchSize: num('batch'), gradientAccumulation: num('accum'), cutoffLen: num('cutoff'),
    template: $<HTMLSelectElement>('template').value as TrainSettings['template'], targets, seed: 42,
  };
}

const chart = $<HTMLCanvasElement>('loss-chart');
let losses: number[] = [];
drawLossChart(chart, losses, num('steps'));
const formatTime = (s: number) => (s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`);

$('train').addEventListener('click', () => void busy('train-status', async () => {
  const settings = trainSettings();
  losses = [];
  drawLossChart(chart, losses, settings.steps);
  setStatus('train-status', 'preparing…');
  $<HTMLButtonElement>('stop').disabled = false;
  delete $('train-status').dataset.steps;
  const r = await call<TrainResult>({ type: 'train', datasetText: datasetArea.value, datasetName, settings });
  hasAdapter = true;
  setStatus('train-status', `done: ${r.steps} steps on ${r.trainSamples} samples (${r.seqLen} tokens each), loss ${r.firstLoss.toFixed(3)} → ${r.finalLoss.toFixed(3)}`);
  // For scripts driving the page (the end-to-end test).
  Object.assign($('train-status').dataset, { firstLoss: String(r.firstLoss), finalLoss: String(r.finalLoss), steps: String(r.steps) });
}));
$('stop').addEventListener('click', () => worker.postMessage({ type: 'stop' }));

// --- chat ---
$('send').addEventListener('click', () => void busy('chat-output', async () => {
  const out = $('chat-output');
  out.classList.remove('error');
  out.textContent = '';
  const useAdapter = $<HTMLInputElement>('use-adapter').checked && hasAdapter;
  await call<string>({ type: 'chat', message: $<HTMLInputElement>('chat-input').value, useAdapter, maxNewTokens: 48 });
  out.dataset.done = String(Date.now());
}));

// --- downloads ---
$('download-adapter').addEventListener('click', () => void busy('export-status', async () => download(await call<DownloadFile[]>({ type: 'exportAdapter' }))));
$('download-gguf').addEventListener('click', () => void busy('export-status', async () => {
  const quantization = $<HTMLSelectElement>('gguf-quant').value as 'q8_0' | 'q4_k_m';
  download(await call<DownloadFile[]>({ type: 'exportGguf', quantization }));
  setStatus('export-status', `GGUF (${quantization}) written`);
}));

onEvent = (e) => {
  if (e.type === 'status') setStatus(statusTarget, e.text);
  else if (e.type === 'token') $('chat-output').textContent += e.text;
  else {
    const p = e.progress;
    losses.push(p.loss);
    drawLossChart(chart, losses, p.totalSteps);
    $('train-stats').textContent = `step ${p.step}/${p.totalSteps} · loss ${p.loss.toFixed(4)} · ${Math.round(p.tokensPerSecond)} tokens/s · ETA ${formatTime(p.etaSeconds)}`;
  }
};

// --- start ---
setBusy(true);
call<GpuSummary>({ type: 'init' }).then(
  (g) => {
    setStatus('gpu-status', `WebGPU: ${g.description}; shader-f16 ${g.f16 ? 'yes' : 'no (f32 kernels)'}; ` +
      `max buffer ${(g.maxBufferSize / 2 ** 20).toFixed(0)} MiB, max binding ${(g.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB`);
    document.body.dataset.gpu = 'ready';
    setBusy(false);
  },
  (e: Error & { noWebGpu?: boolean }) => {
    setStatus('gpu-status', e.noWebGpu
      ? 'This browser has no WebGPU, so nothing can run here. Use a recent Chrome, Edge or Safari (Firefox 141+ on Windows), ' +
        'with hardware acceleration on; on Linux Chrome may need chrome://flags/#enable-unsafe-webgpu.'
      : `WebGPU failed to start: ${e.message}`, true);
    document.body.dataset.gpu = 'none';
  },
);
