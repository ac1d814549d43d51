import type { Gpu } from './device.js';

/** A buffer or a byte range of one, as bound to a kernel. */
export type Binding = GPUBuffer | GPUBufferBinding;

/** A byte range of a buffer (offset a multiple of RANGE_ALIGN). */
export interface BufferRange {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** WebGPU's largest minStorageBufferOffsetAlignment: a binding offset that is a multiple of it is valid everywhere. */
export const RANGE_ALIGN = 256;

/** `n` rounded up to a multiple of `align` (default RANGE_ALIGN). */
export function alignUp(n: number, align = RANGE_ALIGN): number {
  return Math.ceil(n / align) * align;
}

/**
 * One storage buffer holding ranges of `bytes[i]` bytes, one after another, each offset rounded up to RANGE_ALIGN:
 * tensors that one kernel covers in a single binding while others bind them one by one.
 */
export function storageRanges(gpu: Pick<Gpu, 'storage'>, bytes: number[], label: string): BufferRange[] {
  const offsets: number[] = [];
  let end = 0;
  for (const b of bytes) {
    offsets.push(alignUp(end));
    end = offsets[offsets.length - 1]! + b;
  }
  const buffer = gpu.storage(end, label);
  return bytes.map((size, i) => ({ buffer, offset: offsets[i]!, size }));
}

/** The work a dispatch does, counted by its launcher: useful FLOPs and the least bytes it must move. */
export interface KernelCost {
  flops: number;
  bytes: number;
}

export interface Dispatch {
  label: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
  cost?: KernelCost;
}

/** A buffer-to-buffer copy between dispatches (byte offsets need only 4-byte alignment, unlike bindings). */
export interface Copy {
  label: string;
  src: GPUBuffer;
  srcOffset: number;
  dst: GPUBuffer;
  dstOffset: number;
  bytes: number;
}

/** Largest workgroup count per grid dimension that WebGPU guarantees. */
export const MAX_GRID = 65535;

/** Spread `count` workgroups over x and y so that neither exceeds MAX_GRID; kernels flatten wid.x + wid.y * nwg.x. */
export function grid(count: number): [number, number, number] {
  if (count <= MAX_GRID) return [Math.max(1, count), 1, 1];
  const y = Math.ceil(count / MAX_GRID);
  return [Math.ceil(count / y), y, 1];
}

/**
 * A fixed sequence of kernel dispatches with their bind groups made once ("record once, replay"):
 * running it only encodes the list into one compute pass and submits, creating no pipelines or bind groups.
 */
export class Program {
  readonly steps: (Dispatch | Copy)[] = [];
  constructor(readonly gpu: Gpu) {}

  add(label: string, code: string, bindings: Binding[], workgroups: number | [number, number, number], cost?: KernelCost): void {
    const pipeline = this.gpu.pipeline(code);
    const bindGroup = this.gpu.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: bindings.map((b, i) => ({ binding: i, resource: 'buffer' in b ? b : { buffer: b } })),
    });
    const wg: [number, number, number] = typeof workgroups === 'number' ? grid(workgroups) : workgroups;
    this.steps.push({ label, pipeline, bindGroup, workgroups: wg, cost });
  }

  copy(label: string, src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.steps.push({ label, src, srcOffset, dst, dstOffset, bytes });
  }

  /** Encode every step: consecutive dispatches share one compute pass; copies go between passes. */
  encode(enc: GPUCommandEncoder): void {
    let pass: GPUComputePassEncoder | undefined;
    for (const s of this.steps) {
      if ('pipeline' in s) {
        pass ??= enc.beginComputePass();
        pass.setPipeline(s.pipeline);
        pass.setBindGroup(0, s.bindGroup);
        pass.dispatchWorkgroups(s.workgroups[0], s.workgroups[1], s.workgroups[2]);
      } else {
        pass?.end();
        pass = undefined;
        enc.copyBufferToBuffer(s.src, s.srcOffset, s.dst, s.dstOffset, s.bytes);
      }
    }
    pass?.end();
  }

  run(): void {
    const enc = this.gpu.device.createCommandEncoder();
    this.encode(enc);
    this.gpu.device.queue.submit([enc.finish()]);
  }
}
