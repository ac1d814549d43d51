// Projection GEMMs on subgroup matrices (tensor cores, matrix units): y (=, +=, or residual +) x · Wᵀ (+ s·t·Bᵀ)
// with f16 inputs and f32 accumulation, in three dispatches:
// 1. pack: a16 [Mp, Kp] = f16([x | s·t]) and b16 [Np, Kp] = f16([W | B]), zero-padded to the block sizes
//    (W read part by part through its weight accessor; the LoRA term appended to the reduction at loraK0);
// 2. product: c32 [Mp, Np] = a16 · b16ᵀ, each subgroup one block of RM x RN result matrices;
// 3. epilogue: y from c32 inside M x N (residual added, or accumulated).
// The product kernel is a `MatrixProduct`: the subgroup-matrix one where the adapter offers an f16 -> f32
// configuration, or any kernel with the same bindings (tests hand in plain WGSL ones). The engine uses one only
// after its self-check (tune.ts) agreed with the f32 path on this adapter and driver.
import type { SubgroupMatrixConfig } from '../gpu/device.js';
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { matrixRowBytes, wgslWeightArray, wgslWeightLoad, type GpuMatrix } from '../gpu/matrix.js';
import type { Binding, Program } from '../gpu/program.js';
import type { MatmulLora } from './tiled-product.js';
import { programScratch } from './scratch.js';

/** The bindings of every product kernel (its WGSL contains `PRODUCT_LAYOUT.wgsl`, after `enable f16;`). */
export const PRODUCT_LAYOUT = kernelLayout({
  a16: storage('array<f16>'),
  b16: storage('array<f16>'),
  c32: output(),
  p: uniform({ Mp: 'u32', Np: 'u32', Kp: 'u32', blocksN: 'u32', blocks: 'u32' }),
});

/**
 * A kernel computing c32[m · Np + n] = Σ_k a16[m · Kp + k] · b16[n · Kp + k] for m < Mp, n < Np, with the
 * bindings of PRODUCT_LAYOUT. Mp, Np and Kp are multiples of blockM, blockN and kStep.
 */
export interface MatrixProduct {
  name: string;
  wgsl: string;
  blockM: number;
  blockN: number;
  kStep: number;
  /** Output blocks one workgroup covers at least. */
  blocksPerWorkgroup: number;
}

const round = (v: number, to: number) => Math.ceil(v / to) * to;

/**
 * The subgroup-matrix product for one configuration: 256 invocations per workgroup (a multiple of every
 * subgroup size up to 256); each subgroup owns a 2 x 2 block of result matrices and walks the reduction in
 * steps of K, loading its left matrices row-major from a16 and its right ones column-major from b16 (B's
 * element (k, n) is b16[n · Kp + k]).
 */
export function subgroupMatrixProduct(cfg: SubgroupMatrixConfig, subgroupMaxSize: number): MatrixProduct {
  const [RM, RN] = [2, 2];
  const left = `subgroup_matrix_left<f16, ${cfg.K}, ${cfg.M}>`;
  const right = `subgroup_matrix_right<f16, ${cfg.N}, ${cfg.K}>`;
  const result = `subgroup_matrix_result<f32, ${cfg.N}, ${cfg.M}>`;
  const lines: string[] = [];
  const accs: string[] = [];
  const stores: string[] = [];
  for (let i = 0; i < RM; i++) lines.push(`let l${i} = subgroupMatrixLoad<${left}>(&a16, (m0 + ${i * cfg.M}u) * p.Kp + k, false, p.Kp);`);
  for (let j = 0; j < RN; j++) lines.push(`let r${j} = subgroupMatrixLoad<${right}>(&b16, (n0 + ${j * cfg.N}u) * p.Kp + k, true, p.Kp);`);
  for (let i = 0; i < RM; i++) {
    for (let j = 0; j < RN; j++) {
      accs.push(`var acc${i}${j} = ${result}();`);
      lines.push(`acc${i}${j} = subgroupMatrixMultiplyAccumulate(l${i}, r${j}, acc${i}${j});`);
      stores.push(`subgroupMatrixStore(&c32, (m0 + ${i * cfg.M}u) * p.Np + n0 + ${j * cfg.N}u, acc${i}${j}, false, p.Np);`);
    }
  }
  const blockM = RM * cfg.M;
  const blockN = RN * cfg.N;
  const wgsl = /* wgsl */ `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Every value below is uniform per subgroup (the block index is the subgroup's); the analysis only knows
// workgroup uniformity.
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);
${PRODUCT_LAYOUT.wgsl}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(subgroup_id) sid: u32, @builtin(subgroup_size) sgSize: u32) {
  let blk = (wid.x + wid.y * nwg.x) * (256u / sgSize) + sid;
  if (blk >= p.blocks) { return; }
  let m0 = (blk / p.blocksN) * ${blockM}u;
  let n0 = (blk % p.blocksN) * ${blockN}u;
  ${accs.join('\n  ')}
  for (var k = 0u; k < p.Kp; k += ${cfg.K}u) {
    ${lines.join('\n    ')}
  }
  ${stores.join('\n  ')}
}`;
  // The fewest subgroups a workgroup can have (at the largest subgroup size) sets the grid.
  return { name: `subgroup-matrix ${cfg.M}x${cfg.N}x${cfg.K}`, wgsl, blockM, blockN, kStep: cfg.K, blocksPerWorkgroup: 256 / Math.max(subgroupMaxSize, 4) };
}

/** One invocation per element: i = the flat workgroup index · 256 + lid, returning past `count`. */
function perElement(count: string): string {
  return `${entryWgsl(256)} {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= ${count}) { return; }`;
}

const PACK_A_LAYOUT = kernelLayout({
  x: storage(),
  t: storage(),
  a16: output('array<f16>'),
  p: uniform({ M: 'u32', K: 'u32', Mp: 'u32', Kp: 'u32', loraK0: 'u32', r: 'u32', scale: 'f32' }),
});

// a16[m, k] = f16(x[m, k]) for k < K, f16(s · t[m, k - loraK0]) for loraK0 <= k < loraK0 + r, else 0.
const PACK_A_WGSL = /* wgsl */ `enable f16;
${PACK_A_LAYOUT.wgsl}

${perElement('p.Mp * p.Kp')}
  let m = i / p.Kp;
  let k = i % p.Kp;
  var v = 0.0;
  if (m < p.M) {
    if (k < p.K) { v = x[m * p.K + k]; }
    else if (k >= p.loraK0 && k < p.loraK0 + p.r) { v = p.scale * t[m * p.r + k - p.loraK0]; }
  }
  a16[i] = f16(v);
}`;

function packBLayout(w: GpuMatrix) {
  return kernelLayout({
    w: storage(wgslWeightArray(w.dtype)),
    loraB: storage(),
    b16: output('array<f16>'),
    p: uniform({ K: 'u32', Kp: 'u32', row0: 'u32', rows: 'u32', rowEnd: 'u32', N: 'u32', loraK0: 'u32', r: 'u32' }),
  });
}

// b16[n, k] for the rows of one weight part (n from p.row0, n < p.rowEnd): W through its accessor for k < K,
// B's row for the LoRA columns, zero elsewhere and for rows past N.
function packBWgsl(w: GpuMatrix): string {
  return /* wgsl */ `enable f16;
${packBLayout(w).wgsl}
${wgslWeightLoad(w.dtype, 'weight', 'w')}

${perElement('(p.rowEnd - p.row0) * p.Kp')}
  let local = i / p.Kp;
  let k = i % p.Kp;
  let n = p.row0 + local;
  var v = 0.0;
  if (local < p.rows && n < p.N) {
    if (k < p.K) { v = weight(local * p.K + k); }
    else if (k >= p.loraK0 && k < p.loraK0 + p.r) { v = loraB[n * p.r + k - p.loraK0]; }
  }
  b16[n * p.Kp + k] = f16(v);
}`;
}

const EPILOGUE_LAYOUT = kernelLayout({
  c32: storage(),
  y: output(),
  residual: storage(),
  p: uniform({ M: 'u32', N: 'u32', Np: 'u32', mode: 'u32' }),
});

// y[m, n] = c32[m, n] (+ residual[m, n], or + y[m, n] when accumulating) inside M x N.
const EPILOGUE_WGSL = /* wgsl */ `
${EPILOGUE_LAYOUT.wgsl}

${perElement('p.M * p.N')}
  let v = c32[(i / p.N) * p.Np + i % p.N];
  // mode 0: write, 1: accumulate, 2: add the residual.
  if (p.mode == 2u) { y[i] = residual[i] + v; } else if (p.mode == 1u) { y[i] += v; } else { y[i] = v; }
}`;

export interface MatrixMatmulArgs {
  x: Binding;
  w: GpuMatrix;
  y: Binding;
  M: number;
  accumulate?: boolean;
  lora?: MatmulLora;
  residual?: Binding;
}

/** The padded shapes of a projection on `product`, and whether its packed operands fit one binding each. */
export function matrixLayout(product: MatrixProduct, M: number, N: number, K: number, r: number, maxBindingBytes: number) {
  const loraK0 = r > 0 ? round(K, product.kStep) : K;
  const Kp = round(loraK0 + r, product.kStep);
  const Mp = round(M, product.blockM);
  const Np = round(N, product.blockN);
  const fits = Math.max(Mp * Kp * 2, Np * Kp * 2, Mp * Np * 4) <= maxBindingBytes;
  return { loraK0, Kp, Mp, Np, fits };
}

/** Append the projection y (=, +=, residual +) x · Wᵀ (+ s·t·Bᵀ) on `product`; false when it does not fit. */
export function recordMatrixMatmul(prog: Program, product: MatrixProduct, a: MatrixMatmulArgs, label = 'matmul'): boolean {
  const { M } = a;
  const N = a.w.rows;
  const K = a.w.cols;
  const r = a.lora?.r ?? 0;
  const L = matrixLayout(product, M, N, K, r, prog.gpu.maxBindingBytes);
  if (!L.fits || M === 0) return false;
  const a16 = programScratch(prog, 'matrix.a16', L.Mp * L.Kp * 2);
  const b16 = programScratch(prog, 'matrix.b16', L.Np * L.Kp * 2);
  const c32 = programScratch(prog, 'matrix.c32', L.Mp * L.Np * 4);
  // Bindings that a variant without LoRA or residual does not read still need a buffer.
  const unused = programScratch(prog, 'matrix.unused', 16);
  const perThread = (n: number) => Math.ceil(n / 256);
  PACK_A_LAYOUT.dispatch(prog, `${label}.pack_x`, PACK_A_WGSL, {
    x: a.x, t: a.lora?.t ?? unused, a16,
    p: { M, K, Mp: L.Mp, Kp: L.Kp, loraK0: L.loraK0, r, scale: a.lora?.scale ?? 0 },
  }, perThread(L.Mp * L.Kp), { flops: 0, bytes: 4 * M * (K + r) + 2 * L.Mp * L.Kp });
  const parts = a.w.parts;
  const packB = packBLayout(a.w);
  const packBCode = packBWgsl(a.w);
  parts.forEach((part, i) => {
    const rowEnd = i === parts.length - 1 ? L.Np : part.rowStart + part.rows;
    const bytes = part.rows * matrixRowBytes(K, a.w.dtype) + 4 * part.rows * r + 2 * (rowEnd - part.rowStart) * L.Kp;
    packB.dispatch(prog, `${label}.pack_w[${part.rowStart}]`, packBCode, {
      w: part.buffer, loraB: a.lora?.B ?? unused, b16,
      p: { K, Kp: L.Kp, row0: part.rowStart, rows: part.rows, rowEnd, N, loraK0: L.loraK0, r },
    }, perThread((rowEnd - part.rowStart) * L.Kp), { flops: 0, bytes });
  });
  const blocksN = L.Np / product.blockN;
  const blocks = (L.Mp / product.blockM) * blocksN;
  PRODUCT_LAYOUT.dispatch(prog, `${label}.matrix`, product.wgsl, {
    a16, b16, c32, p: { Mp: L.Mp, Np: L.Np, Kp: L.Kp, blocksN, blocks },
  }, Math.ceil(blocks / product.blocksPerWorkgroup), { flops: 2 * M * N * (K + r), bytes: 2 * (L.Mp + L.Np) * L.Kp + 4 * L.Mp * L.Np });
  const mode = a.residual ? 2 : a.accumulate ? 1 : 0;
  EPILOGUE_LAYOUT.dispatch(prog, `${label}.epilogue`, EPILOGUE_WGSL, {
    c32, y: a.y, residual: a.residual ?? unused, p: { M, N, Np: L.Np, mode },
  }, perThread(M * N), { flops: 0, bytes: 4 * M * N * (mode ? 3 : 2) });
  return true;
}
