// End to end in a real browser: the built page (web/dist) in Debian's headless Chromium with WebGPU on
// SwiftShader. Trains the bundled tiny model on the bundled data, chats, downloads the PEFT adapter and GGUFs,
// and checks the files with independent readers (safetensors header, @huggingface/gguf, llama.cpp).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gguf } from '@huggingface/gguf';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/model/safetensors.js';
import { modelConfigToJson } from '../../src/model/model-config.js';
import { runExport } from '../../src/gguf/export-job.js';
import { exportGguf } from '../../src/gguf/export.js';
import { loadModelConfig } from '../../src/model/config.js';
import { DEFAULT_CONFIG, defaultModelSafetensors, defaultTokenizerFiles } from '../../web/default-model.js';
import { serveStatic } from './static-server.js';
import { FIXTURES } from '../helpers.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const SCREENSHOT = join(ROOT, 'test/web/screenshot.png');
const FIXTURE_MODEL = `${FIXTURES}/tiny-tied/model`;
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-quic', '--enable-unsafe-webgpu', '--use-angle=swiftshader', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
];
// The bundled model has 2 layers; LoRA on all 7 projections gives 2 * 7 A/B pairs.
const LAYERS = 2;
const STEPS = 10;
/**
 * Largest |Δ log p| allowed between the page's GGUF and Node's export of the same adapter (the merge runs on
 * another GPU, so a weight on a quantization boundary could round the other way; seen: 0, the same bytes); the
 * adapter itself must move the base model's log-probs by at least ADAPTER_EFFECT_FACTOR times this (seen: 0.85).
 */
const SAME_EXPORT_TOLERANCE = { q8_0: 1e-3, q4_k_m: 1e-3 };
const ADAPTER_EFFECT_FACTOR = 100;
/** A training text of the bundled dataset, as byte tokens: the adapter learned it, so it changes its log-probs. */
const SCORED_TEXT = 'Is 51 even or odd? odd';

let server: Server;
let url: string;
let browser: Browser;
let page: Page;
let tmp: string;
const pageErrors: string[] = [];
/** The downloaded PEFT adapter's folder. */
let adapterDir: string | undefined;

/** The bundled model as an HF folder, written in Node from the same seeded code the page runs. */
function writeDefaultModel(dir: string): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(modelConfigToJson(DEFAULT_CONFIG)));
  writeFileSync(join(dir, 'model.safetensors'), defaultModelSafetensors());
  const { tokenizer, config } = defaultTokenizerFiles();
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}

/** llama.cpp (child process: a bad file can abort it) on `gguf`: log p of each next byte of `text`. */
function nextTokenLogProbs(gguf: string, vocab: number, text: string, name: string): number[] {
  const tokens = [...Buffer.from(text)];
  const request = join(tmp, `${name}-request.json`);
  const result = join(tmp, `${name}-result.json`);
  writeFileSync(request, JSON.stringify({ model: gguf, vocab, rows: [tokens] }));
  const run = spawnSync(process.execPath, [join(ROOT, 'test/gguf-llama-runner.mjs'), request, result], { encoding: 'utf8', timeout: 120_000 });
  if (run.status !== 0) throw new Error(`llama.cpp on ${gguf}: ${run.stderr}`);
  const probs = (JSON.parse(readFileSync(result, 'utf8')) as { rows: number[][][] }).rows[0]!;
  for (const p of probs) expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 3);
  return tokens.slice(1).map((next, t) => Math.log(probs[t]![next]!));
}

const maxAbsDiff = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));

async function setInput(id: string, value: string): Promise<void> {
  await page.fill(`#${id}`, value);
}

/** Click a download button and save what the page offers, by file name. */
async function downloads(buttonId: string, count: number): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const done = new Promise<void>((resolve, reject) => {
    page.on('download', async function onDownload(d) {
      try {
        const path = join(tmp, d.suggestedFilename());
        await d.saveAs(path);
        files.set(d.suggestedFilename(), path);
        if (files.size === count) {
          page.off('download', onDownload);
          resolve();
        }
      } catch (e) {
        reject(e);
      }
    });
  });
  await page.click(`#${buttonId}`);
  await Promise.race([done, page.waitForSelector('#export-status.error', { timeout: 150_000 }).then(async () => {
    throw new Error(`export failed: ${await page.textContent('#export-status')}`);
  })]);
  return files;
}

describe('the browser demo', () => {
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'loraforge-web-'));
    ({ server, url } = await serveStatic(join(ROOT, 'web/dist')));
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage({ acceptDownloads: true, viewport: { width: 900, height: 1000 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(m.text());
    });
    await page.goto(url);
  });

  afterAll(async () => {
    await page?.screenshot({ path: SCREENSHOT, fullPage: true }).catch(() => undefined);
    await browser?.close();
    server?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('finds a WebGPU adapter in the worker', async () => {
    await page.waitForSelector('body[data-gpu]', { timeout: 60_000 });
    const gpu = await page.getAttribute('body', 'data-gpu');
    expect(gpu, (await page.textContent('#gpu-status')) ?? '').toBe('ready');
  });

  it('loads the bundled model', async () => {
    await page.click('#load-model');
    await page.waitForFunction(() => !(document.getElementById('train') as HTMLButtonElement).disabled || document.querySelector('#model-status.error'), undefined, { timeout: 60_000 });
    const status = (await page.textContent('#model-status')) ?? '';
    expect(status).toMatch(/parameters, 2 layers/);
  });

  it('trains: the loss falls and the chart is drawn', async () => {
    await setInput('steps', String(STEPS));
    await setInput('lr', '0.02');
    await page.click('#train');
    await page.waitForFunction(() => document.getElementById('train-status')!.dataset.steps || document.querySelector('#train-status.error'), undefined, { timeout: 150_000 });
    const data = await page.$eval('#train-status', (el) => ({ ...(el as HTMLElement).dataset, text: el.textContent ?? '' }) as Record<string, string>);
    expect(data.steps, data.text).toBe(String(STEPS));
    const first = Number(data.firstLoss);
    const final = Number(data.finalLoss);
    // From ln(vocab) ≈ 5.6 for random weights: ten steps on the bundled data cut it by about one nat.
    expect(final).toBeLessThan(first - 0.5);
    expect(await page.textContent('#train-stats')).toMatch(new RegExp(`step ${STEPS}/${STEPS} .* tokens/s .* ETA`));
    // Drawn pixels: the curve's colour appears on the canvas.
    const curvePixels = await page.$eval('#loss-chart', (c) => {
      const d = (c as HTMLCanvasElement).getContext('2d')!.getImageData(0, 0, (c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] === 0x2f && d[i + 1] === 0x7e && d[i + 2] === 0xd8) n++;
      return n;
    });
    expect(curvePixels).toBeGreaterThan(50);
  });

  it('chats with the adapter on and off', async () => {
    for (const on of [true, false]) {
      await page.setChecked('#use-adapter', on);
      await page.$eval('#chat-output', (el) => delete (el as HTMLElement).dataset.done);
      await page.click('#send');
      await page.waitForFunction(() => document.getElementById('chat-output')!.dataset.done || document.querySelector('#chat-output.error'), undefined, { timeout: 60_000 });
      const failed = await page.$eval('#chat-output', (el) => (el.classList.contains('error') ? el.textContent : ''));
      expect(failed).toBe('');
    }
  });

  it('downloads a PEFT adapter that parses', async () => {
    const files = await downloads('download-adapter', 2);
    adapterDir = join(tmp, 'adapter');
    mkdirSync(adapterDir);
    for (const [name, file] of files) writeFileSync(join(adapterDir, name), readFileSync(file));
    const config = JSON.parse(readFileSync(files.get('adapter_config.json')!, 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 8, lora_alpha: 16 });
    expect(config.target_modules).toHaveLength(7);
    const ckpt = Checkpoint.open(files.get('adapter_model.safetensors')!);
    try {
      expect(ckpt.tensors.size).toBe(LAYERS * 7 * 2);
      const a = ckpt.info('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
      expect(a).toMatchObject({ dtype: 'F32', shape: [8, 64] });
      // Trained: lora_B starts at zero and must have moved.
      expect(ckpt.readF32('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight').some((v) => v !== 0)).toBe(true);
    } finally {
      ckpt.close();
    }
  });

  for (const quantization of ['q8_0', 'q4_k_m'] as const) {
    it(`downloads a merged ${quantization} GGUF that @huggingface/gguf parses and llama.cpp runs`, async () => {
      await page.selectOption('#gguf-quant', quantization);
      const files = await downloads('download-gguf', 1);
      const [name, path] = [...files][0]!;
      expect(name).toMatch(new RegExp(`-lora-${quantization}\\.gguf$`));
      const parsed = await gguf(path, { allowLocalFile: true });
      const metadata = parsed.metadata as Record<string, unknown>;
      expect(metadata['general.architecture']).toBe('qwen3');
      expect(metadata['qwen3.block_count']).toBe(LAYERS);
      expect(parsed.tensorInfos).toHaveLength(2 + LAYERS * 11);
      const vocab = (metadata['tokenizer.ggml.tokens'] as string[]).length;
      // The adapter is in the file: its log-probs are Node's export of the downloaded adapter's, and far from the
      // base model's (both exported here from the same seeded weights the page made).
      if (!adapterDir) throw new Error('the adapter download test did not run');
      const base = writeDefaultModel(join(tmp, 'default-model'));
      const exportOf = async (adapter: string | undefined, out: string) =>
        (await runExport({ model_name_or_path: base, adapter_name_or_path: adapter, export_dir: join(tmp, out), export_format: 'gguf', export_quantization: quantization, export_size: 5 }))[0]!;
      const fromPage = nextTokenLogProbs(path, vocab, SCORED_TEXT, `page-${quantization}`);
      const node = nextTokenLogProbs(await exportOf(adapterDir, `node-${quantization}`), vocab, SCORED_TEXT, `node-${quantization}`);
      const baseOnly = nextTokenLogProbs(await exportOf(undefined, `base-${quantization}`), vocab, SCORED_TEXT, `base-${quantization}`);
      const tolerance = SAME_EXPORT_TOLERANCE[quantization];
      const vsNode = maxAbsDiff(fromPage, node);
      const vsBase = maxAbsDiff(fromPage, baseOnly);
      console.log(JSON.stringify({ quantization, max_abs_dlogp_vs_node_export: vsNode, max_abs_dlogp_vs_base: vsBase }));
      expect(fromPage.every(Number.isFinite)).toBe(true);
      expect(vsNode).toBeLessThanOrEqual(tolerance);
      expect(vsBase).toBeGreaterThan(ADAPTER_EFFECT_FACTOR * tolerance);
    });
  }

  it('loads a local Hugging Face folder picked with the folder input', async () => {
    // The tiny-tied fixture: HF config, F32 safetensors, a byte-level BPE tokenizer (2 layers, vocab 512).
    await page.setInputFiles('#model-folder', FIXTURE_MODEL);
    await page.click('#load-model');
    await page.waitForFunction(() => /parameters/.test(document.getElementById('model-status')!.textContent ?? '') || document.querySelector('#model-status.error'), undefined, { timeout: 60_000 });
    expect(await page.textContent('#model-status')).toMatch(/^model: .*parameters, 2 layers, hidden 64, vocab 512/);
    // A fresh model has no adapter until trained.
    expect(await page.isDisabled('#download-adapter')).toBe(true);
  });

  it('takes a GGUF as its base: loads it in its block types, trains and chats', async () => {
    // The tiny-tied fixture exported as q8_0 by our exporter, alone in a folder.
    const dir = join(tmp, 'gguf-base');
    mkdirSync(dir);
    const modelDir = FIXTURE_MODEL;
    const ck = Checkpoint.open(modelDir);
    await exportGguf({
      outPath: join(dir, 'tiny-q8_0.gguf'), config: loadModelConfig(modelDir), tokenizerDir: modelDir, quantization: 'q8_0', name: 'tiny',
      tensors: [...ck.tensors.values()].map((t) => ({ name: t.name, shape: t.shape, read: () => ck.readF32(t.name) })),
    });
    await page.setInputFiles('#model-folder', dir);
    await page.click('#load-model');
    await page.waitForFunction(() => /parameters/.test(document.getElementById('model-status')!.textContent ?? '') || document.querySelector('#model-status.error'), undefined, { timeout: 60_000 });
    expect(await page.textContent('#model-status')).toMatch(/^tiny-q8_0: .*parameters, 2 layers, hidden 64, vocab 512/);
    await setInput('steps', '2');
    await page.$eval('#train-status', (el) => delete (el as HTMLElement).dataset.steps);
    await page.click('#train');
    await page.waitForFunction(() => document.getElementById('train-status')!.dataset.steps || document.querySelector('#train-status.error'), undefined, { timeout: 150_000 });
    const data = await page.$eval('#train-status', (el) => ({ ...(el as HTMLElement).dataset, text: el.textContent ?? '' }) as Record<string, string>);
    expect(data.steps, data.text).toBe('2');
    expect(Number.isFinite(Number(data.finalLoss))).toBe(true);
    await page.$eval('#chat-output', (el) => delete (el as HTMLElement).dataset.done);
    await page.click('#send');
    await page.waitForFunction(() => document.getElementById('chat-output')!.dataset.done || document.querySelector('#chat-output.error'), undefined, { timeout: 60_000 });
    expect(await page.$eval('#chat-output', (el) => (el.classList.contains('error') ? el.textContent : ''))).toBe('');
  });

  it('says clearly when the browser has no WebGPU', async () => {
    // Without the WebGPU flags and with the GPU process off, Chromium on Linux offers no adapter.
    const args = CHROMIUM_ARGS.filter((a) => !/webgpu|vulkan|angle/i.test(a)).concat('--disable-gpu');
    const noGpu = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
    try {
      const other = await noGpu.newPage();
      await other.goto(url);
      await other.waitForSelector('body[data-gpu]', { timeout: 60_000 });
      expect(await other.getAttribute('body', 'data-gpu')).toBe('none');
      expect(await other.textContent('#gpu-status')).toMatch(/This browser has no WebGPU/);
      expect(await other.isDisabled('#load-model')).toBe(true);
    } finally {
      await noGpu.close();
    }
  });

  it('ran without page errors', () => {
    expect(pageErrors).toEqual([]);
  });
});
