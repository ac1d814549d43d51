// One place that finds a WebGPU adapter (Dawn in Node, navigator.gpu in a browser), asks for the limits the
// engine needs, detects optional features and owns buffers, pipelines and readback.

export interface GpuOptions {
  /** Turn on Dawn's backend validation (Node only): slower, catches misuse in tests. */
  validate?: boolean;
  /** Cap the bytes bound per storage binding below the adapter's limit (tests use this to exercise splitting). */
  maxBindingBytes?: number;
  /** Request timestamp-query with unquantized timestamps (profiling). */
  timestamps?: boolean;
  /** Use f16 math in kernels that have such a variant, where shader-f16 exists. */
  preferF16?: boolean;
  /**
   * Ask Dawn for subgroup matrices with f16 inputs (default true): the toggles that expose the experimental
   * feature and shader-f16 on NVIDIA's Vulkan driver. Kernels still use them only after a self-check.
   */
  subgroupMatrix?: boolean;
}

/** A subgroup matrix shape the adapter multiplies: M x K (left) times K x N (right), f16 in, f32 out. */
export interface SubgroupMatrixConfig {
  M: number;
  N: number;
  K: number;
}

export interface GpuFeatures {
  f16: boolean;
  subgroups: boolean;
  timestamps: boolean;
  /** The f16 -> f32 subgroup matrix configurations (empty without 'chromium-experimental-subgroup-matrix'). */
  subgroupMatrix: SubgroupMatrixConfig[];
  /** The adapter's largest subgroup size (0 when unknown). */
  subgroupMaxSize: number;
}

export class NoWebGpuError extends Error {
  constructor(detail: string) {
    super(
      `no WebGPU adapter found (${detail}). Install a Vulkan, Metal or D3D12 GPU driver; on a machine without a GPU ` +
        `install Mesa's lavapipe >= 25 (Debian 12: sudo bash scripts/install-lavapipe.sh).`,
    );
    this.name = 'NoWebGpuError';
  }
}

type Navigator = { gpu?: GPU };

/** Whether an adapter is a CPU implementation (lavapipe, SwiftShader): its speeds say nothing about GPUs. */
export function isSoftwareAdapter(a: GPUAdapterInfo): boolean {
  return /llvmpipe|lavapipe|swiftshader|software/.test(`${a.vendor} ${a.architecture} ${a.device} ${a.description}`.toLowerCase());
}

async function findGpuApi(opts: GpuOptions): Promise<GPU> {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (typeof process === 'undefined' || !process.versions?.node) throw new NoWebGpuError('this browser has no navigator.gpu');
  // Dawn's Node binding; kept a dynamic import so browser bundles never pull it in.
  const dawn = await import('webgpu');
  Object.assign(globalThis, dawn.globals);
  const flags: string[] = [];
  if (opts.validate) flags.push('validate=1');
  if (opts.timestamps) flags.push('disable-dawn-features=timestamp_quantization');
  // One comma-separated entry: a second enable-dawn-features= would replace the first.
  if (opts.subgroupMatrix !== false) flags.push('enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia');
  return dawn.create(flags);
}

/**
 * Dawn's Node binding polls its instance (the `GPU` object) through a raw pointer with setImmediate while any
 * request is pending, and a device's `lost` promise is pending until the device is destroyed. An instance that the
 * garbage collector frees first (the `Gpu` holding it dropped on an error path) is then used after free: exit
 * 139/134 after the error message. So every instance stays referenced here until its device is lost.
 */
const pinnedInstances = new Map<GPUDevice, GPU>();
/** Devices not yet destroyed, for `destroyAllGpus` (Ctrl-C). */
const liveGpus = new Set<Gpu>();

/** A WebGPU error (validation, out-of-memory, internal) that no error scope caught, surfaced by `Gpu.sync`. */
export class GpuValidationError extends Error {
  constructor(messages: string[]) {
    super(`${messages.length} WebGPU error(s): ${messages.join(' | ')}`);
    this.name = 'GpuValidationError';
  }
}

export class Gpu {
  readonly features: GpuFeatures;
  /** Largest byte size one storage binding may have here. */
  readonly maxBindingBytes: number;
  /** Live bytes in buffers made through this object, and their peak. */
  liveBytes = 0;
  peakBytes = 0;
  /** Live bytes per allocation category (set with `inCategory`; 'other' outside any). */
  readonly liveByCategory = new Map<string, number>();
  private category = 'other';
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly sizes = new WeakMap<GPUBuffer, { size: number; category: string }>();
  private collecting: GPUBuffer[] | undefined;
  /** Uncaptured WebGPU errors not yet reported by `takeErrors` / `sync`, oldest first. */
  private readonly errors: string[] = [];
  private destroyed: Promise<void> | undefined;

  constructor(
    /** Dawn's instance: must outlive the device (see pinnedInstances). */
    readonly api: GPU,
    readonly device: GPUDevice,
    readonly adapterInfo: GPUAdapterInfo,
    features: GpuFeatures,
    maxBindingBytes: number,
    readonly preferF16: boolean,
  ) {
    this.features = features;
    this.maxBindingBytes = maxBindingBytes;
    liveGpus.add(this);
  }

  /** Record an error no error scope caught (the device's uncapturederror handler). */
  recordError(message: string): void {
    this.errors.push(message);
  }

  /** The uncaptured errors recorded since the last call. */
  takeErrors(): string[] {
    return this.errors.splice(0);
  }

  /** Whether the adapter is a CPU implementation (lavapipe, SwiftShader), whose shader compiler is slow to unroll. */
  get software(): boolean {
    return isSoftwareAdapter(this.adapterInfo);
  }

  /** Bytes of workgroup memory one kernel may declare on this device (16 KiB at least). */
  get workgroupBytes(): number {
    return this.device.limits.maxComputeWorkgroupStorageSize;
  }

  /** Whether kernels should take their f16 variant. */
  get useF16(): boolean {
    return this.preferF16 && this.features.f16;
  }

  buffer(bytes: number, usage: GPUBufferUsageFlags, label = ''): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    const buf = this.device.createBuffer({ size, usage, label });
    this.sizes.set(buf, { size, category: this.category });
    this.collecting?.push(buf);
    this.liveBytes += size;
    this.liveByCategory.set(this.category, (this.liveByCategory.get(this.category) ?? 0) + size);
    this.peakBytes = Math.max(this.peakBytes, this.liveBytes);
    return buf;
  }

  /** A storage buffer that kernels read and write and that can be copied from and to. */
  storage(bytes: number, label = ''): GPUBuffer {
    return this.buffer(bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label);
  }

  /** A storage buffer holding `data`. */
  upload(data: ArrayBufferView, label = ''): GPUBuffer {
    const buf = this.storage(data.byteLength, label);
    this.write(buf, data);
    return buf;
  }

  write(buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    // writeBuffer wants a multiple of 4 bytes.
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 === 0) this.device.queue.writeBuffer(buf, offset, bytes);
    else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.device.queue.writeBuffer(buf, offset, padded);
    }
  }

  /** Run `record` and return every buffer it created (uniforms, scratch), so short-lived programs can free them. */
  collect(record: () => void): GPUBuffer[] {
    const outer = this.collecting;
    const mine: GPUBuffer[] = [];
    this.collecting = mine;
    try {
      record();
    } finally {
      this.collecting = outer;
      outer?.push(...mine);
    }
    return mine;
  }

  /** Run `allocate` with its buffers counted under `category` (activations, optimizer…) in liveByCategory. */
  inCategory<T>(category: string, allocate: () => T): T {
    const outer = this.category;
    this.category = category;
    try {
      return allocate();
    } finally {
      this.category = outer;
    }
  }

  release(buf: GPUBuffer): void {
    const entry = this.sizes.get(buf);
    if (entry !== undefined) {
      this.liveBytes -= entry.size;
      this.liveByCategory.set(entry.category, this.liveByCategory.get(entry.category)! - entry.size);
      this.sizes.delete(buf);
    }
    buf.destroy();
  }

  /** Compute pipeline for a WGSL module, compiled once per distinct source. */
  pipeline(code: string, entryPoint = 'main'): GPUComputePipeline {
    const key = `${entryPoint}\n${code}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const module = this.device.createShaderModule({ code });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint } });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /** Copy `bytes` of a buffer back to the CPU. */
  async read(buf: GPUBuffer, bytes?: number, offset = 0): Promise<ArrayBuffer> {
    const size = Math.ceil((bytes ?? buf.size - offset) / 4) * 4;
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buf, offset, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0, bytes ?? size);
    staging.unmap();
    staging.destroy();
    return out;
  }

  async readF32(buf: GPUBuffer, count?: number, offsetElems = 0): Promise<Float32Array> {
    return new Float32Array(await this.read(buf, count === undefined ? undefined : count * 4, offsetElems * 4));
  }

  /** Wait for all submitted work; throws GpuValidationError if WebGPU reported an uncaught error since the last check. */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    const errors = this.takeErrors();
    if (errors.length > 0) throw new GpuValidationError(errors);
  }

  /** Whether destroy() was called. */
  get isDestroyed(): boolean {
    return this.destroyed !== undefined;
  }

  /**
   * Destroy the device now (Dawn waits for the queue to go idle first) and resolve once Dawn has reported it lost:
   * from then on nothing of it is pending and the process may end. Await it before exiting; calling it again
   * returns the same promise.
   */
  destroy(): Promise<void> {
    if (!this.destroyed) {
      this.pipelines.clear();
      liveGpus.delete(this);
      this.device.destroy();
      this.destroyed = this.device.lost.then(() => undefined);
    }
    return this.destroyed;
  }
}

/** Destroy every device still alive (Ctrl-C: the process ends right after). */
export async function destroyAllGpus(): Promise<void> {
  await Promise.all([...liveGpus].map((g) => g.destroy()));
}

export async function createGpu(opts: GpuOptions = {}): Promise<Gpu> {
  const api = await findGpuApi(opts);
  const adapter = await api.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new NoWebGpuError('requestAdapter returned null');
  const want: GPUFeatureName[] = [];
  const has = (f: string) => adapter.features.has(f);
  const info = adapter.info as GPUAdapterInfo & {
    subgroupMaxSize?: number;
    subgroupMatrixConfigs?: { componentType: string; resultComponentType: string; M: number; N: number; K: number }[];
  };
  const matrixFeature = 'chromium-experimental-subgroup-matrix';
  const features: GpuFeatures = {
    f16: has('shader-f16'),
    subgroups: has('subgroups'),
    timestamps: !!opts.timestamps && has('timestamp-query'),
    subgroupMatrix: opts.subgroupMatrix !== false && has(matrixFeature) && has('shader-f16') && has('subgroups')
      ? (info.subgroupMatrixConfigs ?? []).filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32').map(({ M, N, K }) => ({ M, N, K }))
      : [],
    subgroupMaxSize: info.subgroupMaxSize ?? 0,
  };
  if (features.f16) want.push('shader-f16');
  if (features.subgroups) want.push('subgroups' as GPUFeatureName);
  if (features.subgroupMatrix.length > 0) want.push(matrixFeature as GPUFeatureName);
  if (features.timestamps) want.push('timestamp-query');
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: want,
    requiredLimits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: Math.min(l.maxStorageBuffersPerShaderStage, 10),
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: Math.min(l.maxComputeInvocationsPerWorkgroup, 256),
      maxComputeWorkgroupSizeX: Math.min(l.maxComputeWorkgroupSizeX, 256),
      maxComputeWorkgroupSizeY: Math.min(l.maxComputeWorkgroupSizeY, 256),
    },
  });
  pinnedInstances.set(device, api);
  // Unpinned a turn after the loss is delivered: Dawn settles the device's other pending requests with it.
  void device.lost.then(() => setTimeout(() => pinnedInstances.delete(device), 0));
  // Binding ranges must be multiples of 4 bytes; keep a 256-byte granularity for offsets.
  const hwBinding = Math.floor(l.maxStorageBufferBindingSize / 256) * 256;
  const maxBinding = Math.min(hwBinding, opts.maxBindingBytes ?? hwBinding);
  const gpu = new Gpu(api, device, adapter.info, features, maxBinding, !!opts.preferF16);
  device.addEventListener('uncapturederror', (e) => {
    const message = (e as GPUUncapturedErrorEvent).error.message;
    console.error(`WebGPU error: ${message}`);
    gpu.recordError(message);
  });
  return gpu;
}
