// Assembles kquant.wat into kquant-wasm.ts (the module's bytes as base64), so the runtime needs no tool:
//
//   node src/gguf/kquant-wasm-build.mjs           rewrite kquant-wasm.ts
//   node src/gguf/kquant-wasm-build.mjs --check   exit 1 if kquant-wasm.ts is not what kquant.wat assembles to
//
// A small assembler for the subset of the WebAssembly text format kquant.wat uses: one memory, functions with
// named params, locals and a result, and flat (not folded) instructions; block/loop/if take an optional $label
// and (result t); branches name labels. Binary layout from the WebAssembly core spec, section 5.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const VALTYPES = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c };

/** Instructions without immediates. */
const PLAIN = {
  'unreachable': 0x00, 'nop': 0x01, 'else': 0x05, 'end': 0x0b, 'return': 0x0f, 'drop': 0x1a, 'select': 0x1b,
  'i32.eqz': 0x45, 'i32.eq': 0x46, 'i32.ne': 0x47, 'i32.lt_s': 0x48, 'i32.lt_u': 0x49, 'i32.gt_s': 0x4a, 'i32.gt_u': 0x4b,
  'i32.le_s': 0x4c, 'i32.le_u': 0x4d, 'i32.ge_s': 0x4e, 'i32.ge_u': 0x4f,
  'f32.eq': 0x5b, 'f32.ne': 0x5c, 'f32.lt': 0x5d, 'f32.gt': 0x5e, 'f32.le': 0x5f, 'f32.ge': 0x60,
  'i32.add': 0x6a, 'i32.sub': 0x6b, 'i32.mul': 0x6c, 'i32.and': 0x71, 'i32.or': 0x72, 'i32.xor': 0x73,
  'i32.shl': 0x74, 'i32.shr_s': 0x75, 'i32.shr_u': 0x76,
  'f32.abs': 0x8b, 'f32.neg': 0x8c, 'f32.sqrt': 0x91, 'f32.add': 0x92, 'f32.sub': 0x93, 'f32.mul': 0x94, 'f32.div': 0x95,
  'f32.min': 0x96, 'f32.max': 0x97,
  'i32.trunc_f32_s': 0xa8, 'f32.convert_i32_s': 0xb2, 'i32.reinterpret_f32': 0xbc, 'f32.reinterpret_i32': 0xbe,
};

/** Loads and stores: opcode and natural alignment (log2 bytes). */
const MEMORY = {
  'i32.load': [0x28, 2], 'f32.load': [0x2a, 2], 'i32.load8_s': [0x2c, 0], 'i32.load8_u': [0x2d, 0],
  'i32.store': [0x36, 2], 'f32.store': [0x38, 2], 'i32.store8': [0x3a, 0],
};

function uleb(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n) {
  const out = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

const name = (s) => [...uleb(Buffer.byteLength(s)), ...Buffer.from(s)];
const vec = (items) => [...uleb(items.length), ...items.flat()];
const section = (id, bytes) => [id, ...uleb(bytes.length), ...bytes];

/** Text -> nested arrays of atoms (strings keep their quotes); ;; comments dropped. */
function parse(text) {
  const tokens = text.replace(/;;[^\n]*/g, ' ').match(/\(|\)|"[^"]*"|[^\s()]+/g) ?? [];
  let at = 0;
  const list = () => {
    const items = [];
    while (tokens[at] !== ')') {
      if (at >= tokens.length) throw new Error('unbalanced parentheses');
      items.push(tokens[at++] === '(' ? list() : tokens[at - 1]);
    }
    at++;
    return items;
  };
  if (tokens[at++] !== '(') throw new Error('expected (module');
  return list();
}

function f32Bytes(text) {
  const b = Buffer.alloc(4);
  b.writeFloatLE(Number(text));
  return [...b];
}

function assembleFunction(fn, funcIndex) {
  const locals = new Map();
  const params = [];
  const localTypes = [];
  let result = [];
  let exportName;
  let at = typeof fn[1] === 'string' ? 2 : 1;
  for (; at < fn.length && Array.isArray(fn[at]); at++) {
    const [kind, ...rest] = fn[at];
    if (kind === 'export') exportName = JSON.parse(rest[0]);
    else if (kind === 'param' || kind === 'local') {
      locals.set(rest[0], locals.size);
      (kind === 'param' ? params : localTypes).push(VALTYPES[rest[1]]);
    } else if (kind === 'result') result = [VALTYPES[rest[0]]];
    else throw new Error(`unknown function field ${kind}`);
  }
  const labels = [];
  const code = [];
  const local = (t) => {
    if (!locals.has(t)) throw new Error(`unknown local ${t} in ${fn[1]}`);
    return uleb(locals.get(t));
  };
  for (; at < fn.length; at++) {
    const op = fn[at];
    if (Array.isArray(op)) throw new Error(`folded instruction ${op[0]} in ${fn[1]}: write it flat`);
    if (op === 'block' || op === 'loop' || op === 'if') {
      let label = null;
      if (typeof fn[at + 1] === 'string' && fn[at + 1].startsWith('$')) label = fn[++at];
      let blockType = 0x40;
      if (Array.isArray(fn[at + 1]) && fn[at + 1][0] === 'result') blockType = VALTYPES[fn[++at][1]];
      labels.push(label);
      code.push({ block: 0x02, loop: 0x03, if: 0x04 }[op], blockType);
    } else if (op === 'br' || op === 'br_if') {
      const depth = labels.length - 1 - labels.lastIndexOf(fn[++at]);
      if (depth >= labels.length) throw new Error(`unknown label ${fn[at]} in ${fn[1]}`);
      code.push(op === 'br' ? 0x0c : 0x0d, ...uleb(depth));
    } else if (op === 'local.get' || op === 'local.set' || op === 'local.tee') {
      code.push({ 'local.get': 0x20, 'local.set': 0x21, 'local.tee': 0x22 }[op], ...local(fn[++at]));
    } else if (op === 'i32.const') {
      code.push(0x41, ...sleb(Number(fn[++at]) | 0));
    } else if (op === 'f32.const') {
      code.push(0x43, ...f32Bytes(fn[++at]));
    } else if (op in MEMORY) {
      const [opcode, align] = MEMORY[op];
      let offset = 0;
      if (typeof fn[at + 1] === 'string' && fn[at + 1].startsWith('offset=')) offset = Number(fn[++at].slice(7));
      code.push(opcode, ...uleb(align), ...uleb(offset));
    } else if (op in PLAIN) {
      if (op === 'end') labels.pop();
      code.push(PLAIN[op]);
    } else {
      throw new Error(`unsupported instruction ${op} in ${fn[1]}`);
    }
  }
  if (labels.length !== 0) throw new Error(`unclosed block in ${fn[1]}`);
  // Locals are declared one entry per local: simple, and only a few bytes more than grouping runs of a type.
  const body = [...vec(localTypes.map((t) => [1, t])), ...code, 0x0b];
  return { type: [0x60, ...vec(params.map((p) => [p])), ...vec(result.map((r) => [r]))], body: [...uleb(body.length), ...body], exportName, funcIndex };
}

/** The binary module of a WAT text in the subset above. */
function assembleWat(text) {
  const module = parse(text);
  if (module[0] !== 'module') throw new Error('expected (module');
  const functions = [];
  const exports = [];
  let memoryPages;
  for (const field of module.slice(1)) {
    if (field[0] === 'memory') {
      const exported = field.find((f) => Array.isArray(f) && f[0] === 'export');
      memoryPages = Number(field.at(-1));
      if (exported) exports.push([...name(JSON.parse(exported[1])), 0x02, 0]);
    } else if (field[0] === 'func') {
      const fn = assembleFunction(field, functions.length);
      functions.push(fn);
      if (fn.exportName) exports.push([...name(fn.exportName), 0x00, ...uleb(fn.funcIndex)]);
    } else {
      throw new Error(`unsupported module field ${field[0]}`);
    }
  }
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(functions.map((f) => f.type))),
    ...section(3, vec(functions.map((_, i) => uleb(i)))),
    ...(memoryPages === undefined ? [] : section(5, vec([[0x00, ...uleb(memoryPages)]]))),
    ...section(7, vec(exports)),
    ...section(10, vec(functions.map((f) => f.body))),
  ]);
}

function generatedModule(bytes) {
  const base64 = Buffer.from(bytes).toString('base64');
  const lines = base64.match(/.{1,100}/g).map((l) => `  '${l}' +`).join('\n');
  return `// GENERATED by \`node src/gguf/kquant-wasm-build.mjs\` from kquant.wat (edit that, then rerun): do not edit.
/** The WebAssembly module of kquant.wat (${bytes.length} bytes), base64. */
export const KQUANT_WASM_BASE64 =
${lines}
  '';
`;
}

const dir = import.meta.dirname;
const wanted = generatedModule(assembleWat(readFileSync(join(dir, 'kquant.wat'), 'utf8')));
const target = join(dir, 'kquant-wasm.ts');
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {
    // missing: stale
  }
  if (current !== wanted) {
    console.error('kquant-wasm.ts is not what kquant.wat assembles to: run node src/gguf/kquant-wasm-build.mjs');
    process.exit(1);
  }
} else {
  writeFileSync(target, wanted);
}
