// Imports run only downward through the layers gpu → kernels → model → train → gguf → commands / web / bench
// (then the entry points src/cli.ts and src/index.ts), and no set of modules imports itself in a cycle. Every
// import counts: static, `import type`, `export … from` and dynamic `import()`. Parsed with TypeScript's own
// pre-processor, so the check needs no build and sees exactly the specifiers the compiler resolves.
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');

/** Layer of a file (relative to the root); a file may import its own layer and any lower one. */
export function layerOf(file: string): { name: string; rank: number } {
  const parts = file.split('/');
  // Leaf utilities at the root of src/ that import nothing of the project's but each other.
  if (parts[0] === 'src' && ['errors.ts', 'random.ts', 'json-file.ts'].includes(parts[1]!)) return { name: 'util', rank: 0 };
  if (parts[0] === 'src' && ['cli.ts', 'index.ts'].includes(parts[1]!)) return { name: 'entry', rank: 8 };
  if (parts[0] === 'src' && parts[1] === 'parity.ts') return { name: 'gguf', rank: 5 }; // a training-stack check the commands and tests run
  const layers: Record<string, number> = { gpu: 1, kernels: 2, model: 3, train: 4, gguf: 5, commands: 6 };
  if (parts[0] === 'src' && parts[1]! in layers) return { name: parts[1]!, rank: layers[parts[1]!]! };
  // web/ and bench/ sit beside commands/: siblings that do not import each other.
  if (parts[0] === 'web' || parts[0] === 'bench') return { name: parts[0], rank: 6 };
  throw new Error(`${file} is in no layer: add its folder to layerOf`);
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) {
      if (e.name !== 'node_modules' && e.name !== 'results') out.push(...sourceFiles(rel));
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') && !e.name.endsWith('.config.ts')) out.push(rel);
  }
  return out;
}

/** Project files a file imports (relative specifiers resolved from `.js` to the `.ts` source). */
export function importsOf(file: string, text: string): string[] {
  const info = ts.preProcessFile(text, true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((s) => s.startsWith('.'))
    .map((s) => path.posix.normalize(path.posix.join(path.posix.dirname(file), s)).replace(/\.js$/, '.ts'));
}

function importGraph(): Map<string, string[]> {
  const files = [...sourceFiles('src'), ...sourceFiles('web'), ...sourceFiles('bench')];
  return new Map(files.map((f) => [f, importsOf(f, fs.readFileSync(path.join(ROOT, f), 'utf8')).filter((d) => files.includes(d) || d.endsWith('.ts'))]));
}

/** Imports that go up a layer, or across between sibling top layers. */
export function layerViolations(graph: Map<string, string[]>): string[] {
  const bad: string[] = [];
  for (const [from, deps] of graph) {
    const a = layerOf(from);
    for (const to of deps) {
      const b = layerOf(to);
      if (b.rank > a.rank || (b.rank === a.rank && b.name !== a.name)) bad.push(`${from} (${a.name}) imports ${to} (${b.name})`);
    }
  }
  return bad;
}

/** Strongly connected components with more than one file, or a file importing itself (Tarjan). */
export function importCycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return cycles;
}

describe('import layers', () => {
  const graph = importGraph();

  it('reads the whole tree and resolves every relative import to a file', () => {
    expect(graph.size).toBeGreaterThan(80);
    const missing = [...graph].flatMap(([from, deps]) => deps.filter((d) => !graph.has(d)).map((d) => `${from} -> ${d}`));
    expect(missing).toEqual([]);
  });

  it('has no import that goes up a layer or across between commands, web and bench', () => {
    expect(layerViolations(graph)).toEqual([]);
  });

  it('has no import cycle', () => {
    expect(importCycles(graph)).toEqual([]);
  });

  it('catches an upward import, a sibling import and a cycle (the checker itself)', () => {
    const g = new Map<string, string[]>([
      ['src/model/a.ts', ['src/train/b.ts', 'src/gpu/c.ts']],
      ['src/train/b.ts', ['src/model/a.ts']],
      ['src/gpu/c.ts', []],
      ['web/w.ts', ['src/commands/x.ts']],
      ['src/commands/x.ts', ['src/commands/x.ts']],
    ]);
    expect(layerViolations(g)).toEqual(['src/model/a.ts (model) imports src/train/b.ts (train)', 'web/w.ts (web) imports src/commands/x.ts (commands)']);
    expect(importCycles(g)).toEqual([['src/model/a.ts', 'src/train/b.ts'], ['src/commands/x.ts']]);
    expect(importsOf('src/model/a.ts', "import type { X } from '../train/b.js';\nexport * from './c.js';\nconst m = await import('../gpu/d.js');"))
      .toEqual(['src/train/b.ts', 'src/model/c.ts', 'src/gpu/d.ts']);
  });
});
