// Where a benchmark ran: the adapter, the commit, the date.
import { execFileSync } from 'node:child_process';
import { isSoftwareAdapter, type Gpu } from '../src/gpu/device.js';

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
  return {
    vendor: a.vendor,
    architecture: a.architecture,
    device: a.device,
    description: a.description,
    software: isSoftwareAdapter(a),
  };
}

export function deviceInfo(gpu: Gpu): DeviceInfo {
  return { ...adapterIdentity(gpu.adapterInfo), features: { ...gpu.features }, max_binding_bytes: gpu.maxBindingBytes };
}

/** The commit measured and whether the tree differed from it (tracked files changed). */
export interface CommitInfo {
  /** The full hash, or 'unknown' outside a git checkout without LORAFORGE_COMMIT. */
  commit: string;
  dirty: boolean;
}

/**
 * LORAFORGE_COMMIT when set (the GPU machine gets the tree without .git: `<hash>` or `<hash>-dirty`, as the
 * packing step writes it), else git's HEAD and `git status`.
 */
export function gitCommit(): CommitInfo {
  const given = process.env.LORAFORGE_COMMIT;
  if (given) {
    const m = /^([0-9a-f]{40})(-dirty)?$/.exec(given.trim());
    if (!m) throw new Error(`LORAFORGE_COMMIT must be a full 40-hex commit hash, optionally with -dirty, got '${given}'`);
    return { commit: m[1]!, dirty: !!m[2] };
  }
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return { commit: head, dirty: status !== '' };
  } catch {
    return { commit: 'unknown', dirty: false };
  }
}

/** Fields every result carries. */
export function runInfo(): { date: string; commit: string; dirty: boolean; node: string } {
  return { date: new Date().toISOString(), ...gitCommit(), node: process.version };
}
