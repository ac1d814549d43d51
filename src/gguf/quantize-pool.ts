// quantizeRows on worker threads (Node only): the exporter hands slabs of whole rows to a pool of workers and
// writes the results in order (see SlabQuantizer in model-gguf.ts). The browser exports on one thread without it.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { GgmlType } from '../gpu/ggml-types.js';
import type { SlabQuantizer } from './model-gguf.js';
import type { QuantizeJob, QuantizeResult } from './quantize-worker.js';

/** Rows per slab: about 64K elements, so a tensor's last slabs leave the other workers idle only briefly. */
const POOL_SLAB_ELEMENTS = 1 << 16;

interface Pending {
  resolve(bytes: Uint8Array): void;
  reject(error: Error): void;
}

/** `threads` workers running quantizeRows; jobs queue in order and go to whichever worker is free. */
export class QuantizePool implements SlabQuantizer {
  readonly inFlight: number;
  readonly slabElements = POOL_SLAB_ELEMENTS;
  private readonly idle: Worker[] = [];
  private readonly queue: QuantizeJob[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly workers: Worker[] = [];
  private nextId = 0;
  private failure: Error | undefined;

  constructor(readonly threads = availableParallelism()) {
    // Two slabs per worker: one running, one waiting, so no worker waits on the exporter.
    this.inFlight = 2 * threads;
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL('./quantize-worker.js', import.meta.url));
      worker.on('message', (r: QuantizeResult) => this.finished(worker, r));
      worker.on('error', (e) => this.fail(e));
      worker.on('exit', (code) => { if (code !== 0) this.fail(new Error(`quantize worker exited with code ${code}`)); });
      this.workers.push(worker);
      this.idle.push(worker);
    }
  }

  /** quantizeRows(type, slab, rowLength) on a worker. The slab is copied; the caller may reuse it. */
  quantize(type: GgmlType, slab: Float32Array, rowLength: number): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const job: QuantizeJob = { id, type, slab: slab.slice(), rowLength };
    return new Promise<Uint8Array>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.queue.push(job);
      this.dispatch();
    });
  }

  /** Stop the workers; pending jobs are rejected. */
  async close(): Promise<void> {
    this.fail(new Error('quantize pool closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.idle.pop()!.postMessage(job, [job.slab.buffer as ArrayBuffer]);
    }
  }

  private finished(worker: Worker, r: QuantizeResult): void {
    const p = this.pending.get(r.id);
    this.pending.delete(r.id);
    this.idle.push(worker);
    this.dispatch();
    if ('error' in r) p?.reject(new Error(r.error));
    else p?.resolve(r.bytes);
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.queue.length = 0;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }
}
