// A worker thread of QuantizePool (quantize-pool.ts): quantizes the slabs it is sent with quantizeRows and sends
// the bytes back (transferred, not copied).
import { parentPort } from 'node:worker_threads';
import type { GgmlType } from '../gpu/ggml-types.js';
import { quantizeRows } from './quantize.js';

export interface QuantizeJob {
  id: number;
  type: GgmlType;
  slab: Float32Array;
  rowLength: number;
}

export type QuantizeResult = { id: number; bytes: Uint8Array } | { id: number; error: string };

const port = parentPort;
if (!port) throw new Error('quantize-worker.js runs as a worker thread of QuantizePool');
port.on('message', ({ id, type, slab, rowLength }: QuantizeJob) => {
  let result: QuantizeResult;
  try {
    result = { id, bytes: quantizeRows(type, slab, rowLength) };
  } catch (e) {
    result = { id, error: e instanceof Error ? e.message : String(e) };
  }
  port.postMessage(result, 'bytes' in result ? [result.bytes.buffer as ArrayBuffer] : []);
});
