// Rotary position embedding as Qwen3 in HF transformers applies it (rotate-half), in place on Q or K
// [N, heads*headDim]: for pair i < headDim/2 of each head, angle = f32(position) * inv_freq[i],
// (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin). `inverse` rotates by -angle, which is the backward.
//
// HF rounds the angle to f32 and takes an accurate cos/sin of it. Angles reach ~4e4 rad (position 40k, inv_freq 1),
// where WGSL's cos/sin promise nothing (absolute error 2^-11 only inside [-pi, pi]), so the kernel reduces the
// angle by pi/2 with a four-constant Cody-Waite split (each product exact while the quadrant count q < 2^16,
// i.e. angles below ~1e5 rad) and evaluates minimax polynomials (Cephes sinf/cosf) on [-pi/4, pi/4].
import { entryWgsl, kernelLayout, output, storage, uniform } from '../gpu/kernel.js';
import { grid, type Binding, type Program } from '../gpu/program.js';

const WG = 256;

/**
 * WGSL helpers shared by every kernel that rotates by RoPE angles: `ropeAngle(position, invFreq, zero)` (the f32
 * angle as HF rounds it; pass a uniform that is always 0) and `sinCos(angle)` -> (sin, cos).
 */
export const ropeSinCosWgsl = /* wgsl */ `
// pi/2 = P1 + P2 + P3 + P4: P1..P3 have 8 significant bits, so q * Pk is exact for q < 2^16.
const P1 = 1.5703125;
const P2 = 4.84466552734375e-4;
const P3 = -6.407499313354492e-7;
const P4 = 9.92093629470503e-10;
const TWO_OVER_PI = 0.6366197723675814;

// (sin, cos) of r in [-pi/4, pi/4].
fn sinCosReduced(r: f32) -> vec2f {
  let z = r * r;
  let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
  let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
  return vec2f(s, c);
}

fn sinCos(a: f32) -> vec2f {
  let q = round(a * TWO_OVER_PI);
  let r = (((a - q * P1) - q * P2) - q * P3) - q * P4;
  let sc = sinCosReduced(r);
  switch (i32(q) & 3) {
    case 0: { return sc; }
    case 1: { return vec2f(sc.y, -sc.x); }
    case 2: { return -sc; }
    default: { return vec2f(-sc.y, sc.x); }
  }
}

// OR-ing an opaque zero pins the product to its f32 rounding: a compiler must not fuse it into the reduction.
fn ropeAngle(position: u32, freq: f32, zero: u32) -> f32 {
  return bitcast<f32>(bitcast<u32>(f32(position) * freq) | zero);
}`;

const layout = kernelLayout({
  x: output(),
  positions: storage('array<u32>'),
  invFreq: storage(),
  p: uniform({ pairs: 'u32', half: 'u32', heads: 'u32', sinSign: 'f32', zero: 'u32' }),
});

export const ropeWgsl = /* wgsl */ `
${layout.wgsl}

${ropeSinCosWgsl}

${entryWgsl(WG)} {
  let t = (wid.x + wid.y * nwg.x) * ${WG}u + lid;
  if (t >= p.pairs) { return; }
  let i = t % p.half;
  let head = t / p.half; // flat (token, head) index
  let token = head / p.heads;
  let sc = sinCos(ropeAngle(positions[token], invFreq[i], p.zero));
  let sn = sc.x * p.sinSign;
  let j1 = head * 2u * p.half + i;
  let j2 = j1 + p.half;
  let x1 = x[j1];
  let x2 = x[j2];
  x[j1] = x1 * sc.y - x2 * sn;
  x[j2] = x2 * sc.y + x1 * sn;
}`;

/** inv_freq as HF computes it in f32: 1 / theta^(f32(2i) / headDim). */
export function ropeInvFreq(headDim: number, theta: number): Float32Array {
  const f = Math.fround;
  return Float32Array.from({ length: headDim / 2 }, (_, i) => f(1 / f(f(theta) ** f(f(2 * i) / headDim))));
}

export interface RopeArgs {
  /** f32 [N, heads*headDim], rotated in place. */
  x: Binding;
  /** u32[N]. */
  positions: Binding;
  N: number;
  heads: number;
  headDim: number;
  theta: number;
  /** Rotate by -angle (the backward: dx = R(-angle) dy). */
  inverse?: boolean;
}

export function recordRope(prog: Program, a: RopeArgs, label = a.inverse ? 'rope-inverse' : 'rope'): void {
  if (a.headDim % 2 !== 0) throw new Error(`RoPE needs an even head_dim, got ${a.headDim}`);
  const half = a.headDim / 2;
  const pairs = a.N * a.heads * half;
  const invFreq = prog.gpu.upload(ropeInvFreq(a.headDim, a.theta), `${label}.inv_freq`);
  const p = { pairs, half, heads: a.heads, sinSign: a.inverse ? -1 : 1, zero: 0 };
  // Per pair: the angle, its cosine and sine, and a 2x2 rotation (about 8); the pair read and written in place.
  layout.dispatch(prog, label, ropeWgsl, { x: a.x, positions: a.positions, invFreq, p }, grid(Math.ceil(pairs / WG)), { flops: 8 * pairs, bytes: 16 * pairs });
}

/** Plain-TS reference (cos/sin in f64 of the f32 angle); returns a new array. */
export function ropeRef(
  x: Float32Array,
  positions: Uint32Array,
  N: number,
  heads: number,
  headDim: number,
  theta: number,
  inverse = false,
): Float32Array {
  const invFreq = ropeInvFreq(headDim, theta);
  const half = headDim / 2;
  const out = new Float32Array(x);
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < heads; h++) {
      const base = (n * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(Math.fround(positions[n]!) * invFreq[i]!);
        const c = Math.cos(angle);
        const s = inverse ? -Math.sin(angle) : Math.sin(angle);
        const x1 = x[base + i]!;
        const x2 = x[base + i + half]!;
        out[base + i] = x1 * c - x2 * s;
        out[base + i + half] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}
