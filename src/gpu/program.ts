import type { Gpu } from './device.js';

/** A buffer or a byte range of one, as bound to a kernel. */
export type Binding = GPUBuffer | GPUBufferBinding;

export interface Dispatch {
  label: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
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
  readonly dispatches: Dispatch[] = [];
  constructor(readonly gpu: Gpu) {}

  add(label: string, code: string, bindings: Binding[], workgroups: number | [number, number, number]): void {
    const pipeline = this.gpu.pipeline(code);
    const bindGroup = this.gpu.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: bindings.map((b, i) => ({ binding: i, resource: 'buffer' in b ? b : { buffer: b } })),
    });
    const wg: [number, number, number] = typeof workgroups === 'number' ? grid(workgroups) : workgroups;
    this.dispatches.push({ label, pipeline, bindGroup, workgroups: wg });
  }

  /** Append another program's dispatches (shared bind groups, no copies of buffers). */
  append(other: Program): void {
    this.dispatches.push(...other.dispatches);
  }

  encode(pass: GPUComputePassEncoder): void {
    for (const d of this.dispatches) {
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
    }
  }

  run(): void {
    const enc = this.gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    this.encode(pass);
    pass.end();
    this.gpu.device.queue.submit([enc.finish()]);
  }
}
