// A Gpu that allocates nothing: buffers, pipelines and bind groups are placeholders, writes and submits do nothing,
// and every buffer is counted as the real Gpu counts it (live and peak bytes, per category, the largest one). The
// memory plan builds the real weights, adapter, graph and optimizer on it, so its figures are what they allocate.
import { Gpu, type GpuFeatures } from './device.js';

/** WebGPU's buffer usage flags (fixed by the spec), for runtimes where no WebGPU API is loaded. */
const BUFFER_USAGE = {
  MAP_READ: 0x1, MAP_WRITE: 0x2, COPY_SRC: 0x4, COPY_DST: 0x8, INDEX: 0x10, VERTEX: 0x20, UNIFORM: 0x40, STORAGE: 0x80, INDIRECT: 0x100, QUERY_RESOLVE: 0x200,
};

export interface DryRunOptions {
  maxBindingBytes: number;
  maxBufferSize?: number;
  features?: Partial<GpuFeatures>;
  preferF16?: boolean;
  /** Workgroup memory per kernel (default 48 KiB, NVIDIA's). */
  workgroupBytes?: number;
}

/** A placeholder for every WebGPU object the engine creates while recording. */
function placeholderDevice(limits: { maxBufferSize: number; maxStorageBufferBindingSize: number; maxComputeWorkgroupStorageSize: number }): GPUDevice {
  const noop = () => undefined;
  const pass = { setPipeline: noop, setBindGroup: noop, dispatchWorkgroups: noop, end: noop };
  const device = {
    limits,
    lost: new Promise<never>(noop),
    createBuffer: (d: GPUBufferDescriptor) => ({ size: d.size, usage: d.usage, label: d.label ?? '', destroy: noop, mapAsync: () => Promise.resolve() }),
    createShaderModule: () => ({}),
    createComputePipeline: () => ({ getBindGroupLayout: () => ({}) }),
    createBindGroup: () => ({}),
    createCommandEncoder: () => ({ beginComputePass: () => pass, copyBufferToBuffer: noop, finish: () => ({}) }),
    queue: { writeBuffer: noop, submit: noop, onSubmittedWorkDone: () => Promise.resolve() },
    pushErrorScope: noop,
    popErrorScope: () => Promise.resolve(null),
    addEventListener: noop,
    destroy: noop,
  };
  return device as unknown as GPUDevice;
}

export class CountingGpu extends Gpu {
  /** The largest buffer made, by label. */
  largest = { label: '', bytes: 0 };

  constructor(o: DryRunOptions) {
    // Buffer usages are spec constants; a Node process that never loaded Dawn has no GPUBufferUsage global.
    const g = globalThis as { GPUBufferUsage?: unknown };
    g.GPUBufferUsage ??= BUFFER_USAGE;
    const maxBufferSize = o.maxBufferSize ?? Number.MAX_SAFE_INTEGER;
    const features: GpuFeatures = { f16: false, subgroups: false, timestamps: false, subgroupMatrix: [], subgroupMaxSize: 0, ...o.features };
    // Kernel tiles are sized from the workgroup memory: NVIDIA's 48 KiB unless given.
    const limits = { maxBufferSize, maxStorageBufferBindingSize: o.maxBindingBytes, maxComputeWorkgroupStorageSize: o.workgroupBytes ?? 49152 };
    super({} as GPU, placeholderDevice(limits), {} as GPUAdapterInfo, features, o.maxBindingBytes, !!o.preferF16);
  }

  override buffer(bytes: number, usage: GPUBufferUsageFlags, label = ''): GPUBuffer {
    if (bytes > this.largest.bytes) this.largest = { label, bytes };
    return super.buffer(bytes, usage, label);
  }

  override read(): Promise<ArrayBuffer> {
    throw new Error('a dry run has no data to read back');
  }
}
