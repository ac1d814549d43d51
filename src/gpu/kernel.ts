// A kernel's bindings declared once, by name: the WGSL declarations (uniform structs and `@group(0) @binding(i)`
// lines, in declaration order) and the uniform packing are generated from the same object, and a launcher binds
// buffers and uniform values by name. So a field can no longer hold another field's value because two positional
// lists drifted apart, and a binding index is never written by hand.
import type { Gpu } from './device.js';
import type { Binding, KernelCost, Program } from './program.js';

/** WGSL scalar types a uniform field may have (4 bytes each, so a struct of them has no padding). */
export type UniformField = 'u32' | 'i32' | 'f32';

export interface StorageDecl {
  kind: 'storage';
  /** WGSL store type, e.g. `array<f32>` or a struct name declared in the kernel's own WGSL. */
  type: string;
  access: 'read' | 'read_write';
}

export interface UniformDecl<F extends string = string> {
  kind: 'uniform';
  /** Name of the generated WGSL struct. */
  struct: string;
  /** Field name → type, in byte order. */
  fields: Record<F, UniformField>;
}

export type BindingDecl = StorageDecl | UniformDecl;

/** A read-only storage binding (the default) or, with 'read_write', one the kernel writes. */
export function storage(type = 'array<f32>', access: StorageDecl['access'] = 'read'): StorageDecl {
  return { kind: 'storage', type, access };
}

/** A storage binding the kernel writes. */
export function output(type = 'array<f32>'): StorageDecl {
  return storage(type, 'read_write');
}

/** A uniform struct: its fields are packed from the values a launcher passes by name. */
export function uniform<F extends string>(fields: Record<F, UniformField>, struct = 'Params'): UniformDecl<F> {
  return { kind: 'uniform', struct, fields };
}

/** Declarations by WGSL variable name; a declaration that is `undefined` is absent from this variant. */
export type LayoutDecls = Record<string, BindingDecl | undefined>;

/** What a launcher passes for one declaration: a buffer (range), or for a uniform its field values by name. */
export type BindingArg<D> = D extends UniformDecl<infer F> ? Record<F, number> | GPUBuffer : Binding;

type RequiredKeys<D> = { [K in keyof D]: undefined extends D[K] ? never : K }[keyof D];
type OptionalKeys<D> = Exclude<keyof D, RequiredKeys<D>>;

/** Arguments of a dispatch: every present declaration by name (a variant's absent ones may be left out). */
export type LayoutArgs<D extends LayoutDecls> = { [K in RequiredKeys<D>]: BindingArg<D[K]> } & {
  [K in OptionalKeys<D>]?: BindingArg<NonNullable<D[K]>>;
};

/** Bytes of a uniform struct's values, padded to 16 (the smallest uniform binding size WebGPU accepts everywhere). */
export function packUniform<F extends string>(decl: UniformDecl<F>, values: Record<F, number>): ArrayBuffer {
  const names = Object.keys(decl.fields) as F[];
  const data = new DataView(new ArrayBuffer(Math.max(16, Math.ceil((names.length * 4) / 16) * 16)));
  names.forEach((name, i) => {
    const v = values[name];
    const type = decl.fields[name];
    if (typeof v !== 'number') throw new Error(`uniform ${decl.struct}.${name}: no value given`);
    if (type === 'f32') data.setFloat32(i * 4, v, true);
    else if (type === 'i32' && Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31) data.setInt32(i * 4, v, true);
    else if (type === 'u32' && Number.isInteger(v) && v >= 0 && v < 2 ** 32) data.setUint32(i * 4, v, true);
    else throw new Error(`uniform ${decl.struct}.${name}: ${v} is not a ${type}`);
  });
  for (const name of Object.keys(values)) {
    if (!(name in decl.fields)) throw new Error(`uniform ${decl.struct} has no field ${name}`);
  }
  return data.buffer;
}

/** A uniform buffer holding `values`; rewrite it later with `writeUniform`. */
export function uniformBuffer<F extends string>(gpu: Gpu, decl: UniformDecl<F>, values: Record<F, number>, label = decl.struct): GPUBuffer {
  const bytes = packUniform(decl, values);
  const buf = gpu.buffer(bytes.byteLength, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label);
  gpu.write(buf, new Uint8Array(bytes));
  return buf;
}

/** Overwrite a uniform buffer made by `uniformBuffer` (per-step values such as a learning rate). */
export function writeUniform<F extends string>(gpu: Gpu, buf: GPUBuffer, decl: UniformDecl<F>, values: Record<F, number>): void {
  gpu.write(buf, new Uint8Array(packUniform(decl, values)));
}

/**
 * The WGSL entry point every kernel uses: `fn main` with the flat workgroup id parts (`wid`, `nwg`, for grids
 * spread by `grid()`: `wid.x + wid.y * nwg.x`) and `lid`, the invocation's index in its workgroup.
 */
export function entryWgsl(workgroupSize: number): string {
  return `@compute @workgroup_size(${workgroupSize})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32)`;
}

/** The bindings of one kernel variant, by name, in binding order. */
export class KernelLayout<D extends LayoutDecls> {
  private readonly present: [string, BindingDecl][];

  constructor(readonly decls: D) {
    this.present = Object.entries(decls).filter((e): e is [string, BindingDecl] => e[1] !== undefined);
    const structs = new Set<string>();
    for (const [, d] of this.present) {
      if (d.kind !== 'uniform') continue;
      if (structs.has(d.struct)) throw new Error(`two uniform bindings declare struct ${d.struct}`);
      structs.add(d.struct);
    }
  }

  /** WGSL: the uniform structs, then one `@group(0) @binding(i) var…` line per binding. */
  get wgsl(): string {
    const lines: string[] = [];
    for (const [, d] of this.present) {
      if (d.kind === 'uniform') {
        const fields = Object.entries(d.fields).map(([n, t]) => `${n}: ${t}`).join(', ');
        lines.push(`struct ${d.struct} { ${fields} }`);
      }
    }
    this.present.forEach(([name, d], i) => {
      const space = d.kind === 'uniform' ? 'uniform' : `storage, ${d.access}`;
      lines.push(`@group(0) @binding(${i}) var<${space}> ${name}: ${d.kind === 'uniform' ? d.struct : d.type};`);
    });
    return lines.join('\n');
  }

  /** The bindings in binding order; uniform values become a new uniform buffer (owned by the Gpu, like any buffer). */
  bindings(gpu: Gpu, args: LayoutArgs<D>, label: string): Binding[] {
    const given = args as Record<string, unknown>;
    for (const name of Object.keys(given)) {
      if (given[name] !== undefined && this.decls[name] === undefined) throw new Error(`${label}: no binding named ${name} in this variant`);
    }
    return this.present.map(([name, d]) => {
      const v = given[name];
      if (v === undefined) throw new Error(`${label}: binding ${name} not given`);
      if (d.kind === 'uniform' && !isBinding(v)) return uniformBuffer(gpu, d, v as Record<string, number>, `${label}.${name}`);
      return v as Binding;
    });
  }

  /** Append one dispatch of `code` (which must contain `this.wgsl`) with its bindings by name. */
  dispatch(prog: Program, label: string, code: string, args: LayoutArgs<D>, workgroups: number | [number, number, number], cost?: KernelCost): void {
    prog.add(label, code, this.bindings(prog.gpu, args, label), workgroups, cost);
  }
}

/** A GPUBuffer or a range of one, as opposed to a record of uniform values. */
function isBinding(v: unknown): v is Binding {
  return typeof v === 'object' && v !== null && ('buffer' in v || 'mapAsync' in v);
}

/** Declare a kernel variant's bindings once; see KernelLayout. */
export function kernelLayout<D extends LayoutDecls>(decls: D): KernelLayout<D> {
  return new KernelLayout(decls);
}
