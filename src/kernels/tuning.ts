// Which tiled-product variant each product shape runs with on this adapter: a table filled by tuning (tune.ts
// times the variants at the model's shapes; the choice is cached per adapter and driver), else a rule by shape.
import type { Gpu } from '../gpu/device.js';
import type { MatrixProduct } from './subgroup-matrix.js';
import type { MatrixDType } from '../gpu/matrix.js';
import { thinTile, TILES, type TileConfig, type TileName } from './tiled-product.js';

/** The products that choose a tile: weight matmul, its input gradient, the general GEMM. */
export type ProductKind = 'matmul' | 'matmul-input-grad' | 'gemm';

/** A tuned choice: a tile and whether its operands are staged as f16. */
export interface TileChoice {
  tile: TileName;
  f16: boolean;
}

/** Key of one product shape in a tuning table: kind, output rows x columns x reduction, weight type. */
export function shapeKey(kind: ProductKind, M: number, N: number, K: number, dtype: MatrixDType): string {
  return `${kind} ${M}x${N}x${K} ${dtype}`;
}

const tables = new WeakMap<Gpu, Map<string, TileChoice>>();
const overrides = new WeakMap<Gpu, TileChoice>();

/** Make every product on `gpu` use one variant (tuning times each this way; tests check each), or stop. */
export function forceTile(gpu: Gpu, choice: TileChoice | undefined): void {
  if (choice) overrides.set(gpu, choice);
  else overrides.delete(gpu);
}

/** Install tuned choices for `gpu` (replacing earlier ones); shapes not in `choices` keep the rule. */
export function setTileChoices(gpu: Gpu, choices: Record<string, TileChoice>): void {
  tables.set(gpu, new Map(Object.entries(choices)));
}

export function tileChoices(gpu: Gpu): Record<string, TileChoice> {
  return Object.fromEntries(tables.get(gpu) ?? []);
}

/**
 * The rule without tuning: thin outputs (≤ 32 columns) a thin tile; otherwise the largest square-ish tile that
 * still gives at least 64 workgroups (a wide GPU needs them all busy), down to 64 x 64.
 */
export function defaultTile(M: number, N: number): TileName {
  const thin = thinTile(N);
  if (thin) return thin;
  const tiles = (bm: number, bn: number) => Math.ceil(M / bm) * Math.ceil(N / bn);
  if (M >= 128 && N >= 128 && tiles(128, 128) >= 64) return 't128x128';
  if (M >= 128 && tiles(128, 64) >= 64) return 't128x64';
  if (N >= 128 && tiles(64, 128) >= 64) return 't64x128';
  return 't64x64';
}

/**
 * The tile a product runs with: the tuned choice for its shape, else the rule; f16 staging only where the
 * device uses f16 (shader-f16 present and asked for), for the weight products, and tuning did not find f32
 * faster.
 */
export function chooseTile(gpu: Gpu, kind: ProductKind, M: number, N: number, K: number, dtype: MatrixDType): TileConfig {
  const tuned = overrides.get(gpu) ?? tables.get(gpu)?.get(shapeKey(kind, M, N, K, dtype));
  const name = tuned?.tile ?? defaultTile(M, N);
  // The general GEMM (LoRA factors and their gradients) stays f32 throughout.
  const f16 = kind !== 'gemm' && gpu.useF16 && (tuned?.f16 ?? true);
  return { ...TILES[name], f16 };
}

const matrixProducts = new WeakMap<Gpu, MatrixProduct>();

/**
 * The matrix-unit product the projections run on (tune.ts installs one only after its self-check on this
 * adapter and driver agreed with the f32 path), or none: the tiled f32 kernels.
 */
export function setMatrixProduct(gpu: Gpu, product: MatrixProduct | undefined): void {
  if (product) matrixProducts.set(gpu, product);
  else matrixProducts.delete(gpu);
}

export function matrixProduct(gpu: Gpu): MatrixProduct | undefined {
  return matrixProducts.get(gpu);
}
