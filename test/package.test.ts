// The package as a user gets it: `npm pack` of a fresh build, `npm install` of the tarball into an empty folder,
// then the library API used from JavaScript (train, load with the adapter, chat, generate, export) and type-checked
// from TypeScript. Offline and fast: the tarball's dependencies are linked from this checkout's node_modules
// before `npm install --offline`, so npm only unpacks the tarball (and fails if it would need anything else).
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTinyDataset, writeTinyModel } from './tiny-model.js';

const REPO = resolve(import.meta.dirname, '..');
const work = join(tmpdir(), `loraforge-package-${process.pid}`);
const consumer = join(work, 'consumer');
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(cmd: string, args: string[], cwd: string, timeout = 120_000): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, npm_config_update_notifier: 'false' } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Stage the package's files with a fresh dist/ (tsc into the stage, not the checkout's dist/), pack it. */
function pack(): { tarball: string; manifest: { dependencies: Record<string, string>; devDependencies: Record<string, string>; files: string[] } } {
  const stage = join(work, 'stage');
  const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
  mkdirSync(stage, { recursive: true });
  for (const f of ['package.json', 'README.md', ...manifest.files.filter((f: string) => f !== 'dist')]) cpSync(join(REPO, f), join(stage, f), { recursive: true });
  run(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', join(REPO, 'tsconfig.build.json'), '--outDir', join(stage, 'dist')], REPO, 300_000);
  const out = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], stage);
  return { tarball: join(work, JSON.parse(out.stdout)[0].filename), manifest };
}

/**
 * An empty project depending on the tarball (and, as a TypeScript user's would, on @types/node); the tarball's
 * dependencies linked from this checkout, then `npm install --offline`.
 */
function install(tarball: string, deps: string[], typesNode: string): void {
  mkdirSync(consumer, { recursive: true });
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({
    name: 'consumer', private: true, type: 'module', dependencies: { loraforge: `file:${tarball}` }, devDependencies: { '@types/node': typesNode },
  }));
  for (const dep of [...deps, '@types/node']) {
    const link = join(consumer, 'node_modules', dep);
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(realpathSync(join(REPO, 'node_modules', dep)), link, 'dir');
  }
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], consumer);
}

describe('the packed package', () => {
  let files: string[];
  beforeAll(() => {
    const { tarball, manifest } = pack();
    files = run('tar', ['-tzf', tarball], work).stdout.split('\n').filter(Boolean);
    install(tarball, Object.keys(manifest.dependencies), manifest.devDependencies['@types/node']!);
  }, 400_000);

  it('holds the built library with its types, the CLI and the data, and no sources or tests', () => {
    for (const f of ['package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/cli.js', 'package/bin/loraforge.js', 'package/data/parity.json']) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => /^package\/(src|test|bench|web)\//.test(f))).toEqual([]);
    expect(existsSync(join(consumer, 'node_modules/loraforge/dist/index.js'))).toBe(true);
  });

  it('from JavaScript: trains, chats and generates with the adapter, exports, and reports bad options as UserErrors', () => {
    const model = writeTinyModel(join(work, 'model'));
    const data = writeTinyDataset(join(work, 'data'), 4);
    writeFileSync(join(consumer, 'use.mjs'), `
import * as assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { exportModel, loadModel, train, UserError, GGUF_PRESETS } from 'loraforge';

const out = ${JSON.stringify(join(work, 'run'))};
const steps = [];
const result = await train({
  model_name_or_path: ${JSON.stringify(model)}, dataset: ${JSON.stringify(data)}, template: 'qwen3_nothink', cutoff_len: 32,
  output_dir: out, lora_rank: 4, per_device_train_batch_size: 2, gradient_accumulation_steps: 1, learning_rate: 1e-2,
  max_steps: 2, logging_steps: 1, some_unknown_key: 1,
}, { onStep: (done) => steps.push(done) });
assert.equal(result.steps, 2);
assert.deepEqual(steps.at(-1), 2);
assert.ok(Number.isFinite(result.finalLoss));
assert.deepEqual(result.warnings, ["train options: unknown key 'some_unknown_key' ignored"]);
assert.ok(existsSync(out + '/adapter_model.safetensors'));

const m = await loadModel(${JSON.stringify(model)}, { adapter: out, maxLength: 64 });
assert.equal(m.config.numLayers, 2);
assert.ok(m.lora);
let streamed = '';
const reply = await m.chat([{ role: 'user', content: 'Add 1 and 2.' }], { maxNewTokens: 4, temperature: 0, onText: (t) => (streamed += t) });
assert.equal(typeof reply, 'string');
assert.equal(streamed, reply);
const text = await m.generate('Add', { maxNewTokens: 3, temperature: 0 });
assert.equal(typeof text, 'string');
await m.close();

const files = await exportModel({ model_name_or_path: ${JSON.stringify(model)}, adapter_name_or_path: out, export_dir: out + '/gguf', export_format: 'gguf-lora' });
assert.deepEqual(files, [out + '/gguf/adapter.gguf']);
assert.ok(existsSync(files[0]));
assert.ok(GGUF_PRESETS.includes('q4_k_m'));
// A bad adapter is the user's error, and leaves no device behind (the script must still end by itself).
await assert.rejects(loadModel(${JSON.stringify(model)}, { adapter: ${JSON.stringify(join(work, 'no-adapter'))} }), (e) => e instanceof UserError);
await assert.rejects(exportModel({ model_name_or_path: 'm', export_dir: 'x', export_quantization: 'q3_z' }), (e) => e instanceof UserError && /^export options: export_quantization must be one of/.test(e.message));
console.log('ok', result.firstLoss, result.finalLoss);
`);
    const r = run(process.execPath, ['use.mjs'], consumer, 240_000);
    expect(r.stdout).toMatch(/^ok \d/m);
  }, 300_000);

  it('from TypeScript: a consumer type-checks against the shipped declarations, and a misuse does not', () => {
    writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: ['node'] },
      include: ['use.ts'],
    }));
    const good = `
import { exportModel, loadModel, train, type ChatMessage, type ExportOptions, type Model, type RunResult, type TrainConfig } from 'loraforge';

export async function demo(): Promise<string> {
  const r: RunResult = await train({ model_name_or_path: 'm', dataset: 'd' }, { onLog: (e) => console.log(e.loss) });
  const model: Model = await loadModel('m', { adapter: 'a', dtype: 'bf16' });
  const messages: ChatMessage[] = [{ role: 'user', content: String(r.finalLoss) }];
  const reply: string = await model.chat(messages, { temperature: 0, onText: (t: string) => void t });
  const buffer: GPUBuffer | undefined = model.lora?.layers[0]?.q_proj?.A.buffer;
  await model.close();
  const files: string[] = await exportModel({ export_format: 'gguf' }, { onProgress: (done: number, total: number) => void (done / total) });
  const o: Partial<ExportOptions> = { export_quantization: 'q4_k_m' };
  const c: Partial<TrainConfig> = { lora_rank: 8 };
  return reply + files.join() + String(buffer) + JSON.stringify([o, c]);
}
`;
    const tsc = [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'];
    writeFileSync(join(consumer, 'use.ts'), good);
    run(process.execPath, tsc, consumer);
    writeFileSync(join(consumer, 'use.ts'), good.replace("export_quantization: 'q4_k_m'", "export_quantization: 'q3_z'"));
    const bad = spawnSync(process.execPath, tsc, { cwd: consumer, encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stdout).toMatch(/use\.ts.*'"q3_z"' is not assignable/);
  }, 120_000);
});
