// Where a benchmark ran: the adapter, the commit, the date.
import { execFileSync } from 'node:child_process';
import type { Gpu } from '../src/gpu/device.js';

export interface DeviceInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Set when the adapter is a CPU implementation (lavapipe, SwiftShader): its speed says nothing about GPUs. */
  software: boolean;
  features: { f16: boolean; subgroups: boolean; timestamps: boolean };
  max_binding_bytes: number;
}

/** The adapter's identity, and whether it is a CPU implementation. */
export function adapterIdentity(a: GPUAdapterInfo): Pick<DeviceInfo, 'vendor' | 'architecture' | 'device' | 'description' | 'software'> {
  const text = `${a.vendor} ${a.architecture} ${a.device} ${a.description}`.toLowerCase();
  return {
    vendor: a.vendor,
    architecture: a.architecture,
    device: a.device,
    description: a.description,
    software: /llvmpipe|lavapipe|swiftshader|software/.test(text),
  };
}

export function deviceInfo(gpu: Gpu): DeviceInfo {
  return { ...adapterIdentity(gpu.adapterInfo), features: { ...gpu.features }, max_binding_bytes: gpu.maxBindingBytes };
}

/**
 * The commit measured: LORAFORGE_COMMIT when set (the GPU machine gets the tree without .git), else git's HEAD,
 * marked `-dirty` when tracked files differ from it.
 */
export function gitCommit(): string {
  if (process.env.LORAFORGE_COMMIT) return process.env.LORAFORGE_COMMIT;
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${head}-dirty` : head;
  } catch {
    return 'unknown';
  }
}

/** Fields every result carries. */
export function runInfo(): { date: string; commit: string; node: string } {
  return { date: new Date().toISOString(), commit: gitCommit(), node: process.version };
}
