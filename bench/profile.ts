// Per-kernel GPU time from timestamp queries: a program's steps are re-encoded with one compute pass per
// dispatch, each pass writing its begin and end timestamps. Profiling changes how work is batched, so it
// runs apart from the timed steps, and its buffers bypass the Gpu's byte counters.
import type { Gpu } from '../src/gpu/device.js';
import type { Dispatch, KernelCost, Program } from '../src/gpu/program.js';

/** WebGPU's limit on queries per query set; each dispatch takes two. */
const MAX_QUERIES = 4096;

export interface KernelTime {
  /** Launch label without its layer prefix `L<n>.` and weight-part suffix `[row]`. */
  kernel: string;
  calls: number;
  ms: number;
  /**
   * Useful FLOPs and least bytes moved over all calls, as counted by the launcher (null where the launcher
   * does not count), and the rates they give: what bounds the kernel, compute or memory.
   */
  flops: number | null;
  bytes: number | null;
  tflops: number | null;
  gbps: number | null;
}

export type KernelProfile =
  | {
    available: true;
    /** Dispatches per profiled step, and the FLOPs they execute (counted kernels only). */
    dispatches: number;
    flops: number;
    total_ms: number;
    kernels: KernelTime[];
  }
  | { available: false; reason: string };

/** TFLOP/s and GB/s of `cost` done in `ms` (null where not counted). */
export function rates(cost: KernelCost | undefined, ms: number): { tflops: number | null; gbps: number | null } {
  if (!cost || !(ms > 0)) return { tflops: null, gbps: null };
  return { tflops: significant(cost.flops / (ms / 1e3) / 1e12, 4), gbps: significant(cost.bytes / (ms / 1e3) / 1e9, 4) };
}

/** The summed cost of the dispatches of `programs` (one run of each), and how many there are. */
export function programCost(programs: Program[]): { dispatches: number; flops: number; bytes: number } {
  let dispatches = 0, flops = 0, bytes = 0;
  for (const s of programs.flatMap((p) => p.steps)) {
    if (!('pipeline' in s)) continue;
    dispatches++;
    flops += s.cost?.flops ?? 0;
    bytes += s.cost?.bytes ?? 0;
  }
  return { dispatches, flops, bytes };
}

/** The kernel a dispatch label belongs to: `L3.q_proj.loraA` and `L7.q_proj.loraA` count as one `q_proj.loraA`. */
export function kernelName(label: string): string {
  return label.replace(/^L\d+\./, '').replace(/\[\d+\]$/, '');
}

/**
 * The length of one timed pass. A timestamp the driver could not take reads 0, and one from a clock that jumped
 * can run backwards: either is an error, never a 0 ns kernel (which would show an infinite TFLOP/s). A pass whose
 * end equals its begin measured nothing either.
 */
export function passNanoseconds(label: string, begin: bigint, end: bigint): number {
  if (begin === 0n || end === 0n) throw new Error(`timestamp query: pass '${label}' has a missing timestamp (begin ${begin}, end ${end})`);
  if (end <= begin) throw new Error(`timestamp query: pass '${label}' ends at ${end}, not after its begin ${begin} (non-monotonic timestamps)`);
  return Number(end - begin);
}

/** GPU nanoseconds of every dispatch of `programs` run once in order (copies run untimed between them). */
export async function dispatchTimes(gpu: Gpu, programs: Program[]): Promise<{ label: string; ns: number; cost?: KernelCost }[]> {
  const device = gpu.device;
  const steps = programs.flatMap((p) => p.steps);
  const out: { label: string; ns: number; cost?: KernelCost }[] = [];
  const perChunk = MAX_QUERIES / 2;
  let i = 0;
  while (i < steps.length) {
    const enc = device.createCommandEncoder();
    const timed: Dispatch[] = [];
    const querySet = device.createQuerySet({ type: 'timestamp', count: MAX_QUERIES });
    for (; i < steps.length && timed.length < perChunk; i++) {
      const s = steps[i]!;
      if (!('pipeline' in s)) {
        enc.copyBufferToBuffer(s.src, s.srcOffset, s.dst, s.dstOffset, s.bytes);
        continue;
      }
      const q = timed.length * 2;
      const pass = enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: q, endOfPassWriteIndex: q + 1 } });
      pass.setPipeline(s.pipeline);
      pass.setBindGroup(0, s.bindGroup);
      pass.dispatchWorkgroups(s.workgroups[0], s.workgroups[1], s.workgroups[2]);
      pass.end();
      timed.push(s);
    }
    if (timed.length === 0) {
      device.queue.submit([enc.finish()]);
      querySet.destroy();
      continue;
    }
    const bytes = timed.length * 2 * 8;
    const resolved = device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    enc.resolveQuerySet(querySet, 0, timed.length * 2, resolved, 0);
    enc.copyBufferToBuffer(resolved, 0, readback, 0, bytes);
    device.queue.submit([enc.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    const stamps = new BigUint64Array(readback.getMappedRange().slice(0));
    readback.unmap();
    for (const b of [readback, resolved]) b.destroy();
    querySet.destroy();
    timed.forEach((d, k) => out.push({ label: d.label, ns: passNanoseconds(d.label, stamps[2 * k]!, stamps[2 * k + 1]!), cost: d.cost }));
  }
  return out;
}

/** Run `programs` once, timing each dispatch, and sum the times per kernel (largest first). */
export async function profileKernels(gpu: Gpu, programs: Program[]): Promise<KernelProfile> {
  if (!gpu.features.timestamps) {
    return { available: false, reason: "the adapter lacks 'timestamp-query' (or the Gpu was created without timestamps: true)" };
  }
  const times = await dispatchTimes(gpu, programs);
  const byKernel = new Map<string, { kernel: string; calls: number; ms: number; flops: number; bytes: number; counted: boolean }>();
  for (const t of times) {
    const name = kernelName(t.label);
    const k = byKernel.get(name) ?? { kernel: name, calls: 0, ms: 0, flops: 0, bytes: 0, counted: true };
    k.calls++;
    k.ms += t.ns / 1e6;
    k.flops += t.cost?.flops ?? 0;
    k.bytes += t.cost?.bytes ?? 0;
    k.counted &&= !!t.cost;
    byKernel.set(name, k);
  }
  const kernels = [...byKernel.values()].sort((a, b) => b.ms - a.ms).map((k): KernelTime => {
    const cost = k.counted ? { flops: k.flops, bytes: k.bytes } : undefined;
    return { kernel: k.kernel, calls: k.calls, ms: round(k.ms, 4), flops: cost?.flops ?? null, bytes: cost?.bytes ?? null, ...rates(cost, k.ms) };
  });
  const total = times.reduce((s, t) => s + t.ns, 0) / 1e6;
  const flops = times.reduce((s, t) => s + (t.cost?.flops ?? 0), 0);
  return { available: true, dispatches: times.length, flops, total_ms: round(total, 3), kernels };
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** `x` to `digits` significant digits (speeds span from GFLOP/s on lavapipe to hundreds of TFLOP/s). */
export function significant(x: number, digits: number): number {
  return Number(x.toPrecision(digits));
}
