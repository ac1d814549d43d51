// Reading GGUF files (src/model/gguf-format.ts) against @huggingface/gguf's parser, the tokenizer rebuilt from GGUF
// metadata against the HF tokenizer it was written from, bad files refused with one line, and the Ollama store
// lookup on a store laid out as Ollama lays it out.
import { gguf } from '@huggingface/gguf';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { exportGguf } from '../src/gguf/export.js';
import { loadModelConfig } from '../src/model/config.js';
import { readGguf, readGgufTensorBytes, type GgufFile } from '../src/model/gguf-format.js';
import { resolveGgufFile } from '../src/model/gguf-source.js';
import { tokenizerFilesFromGguf } from '../src/model/gguf-tokenizer.js';
import { fileSource, memorySource } from '../src/model/safetensors.js';
import { JsonTokenizer, Tokenizer, type ChatMessage } from '../src/model/tokenizer.js';
import { FIXTURES, fixtureSources, readGgufTensors, tempDir } from './gguf-oracles.js';

const dir = tempDir();
const modelDir = join(FIXTURES, 'tiny-tied', 'model');
let file: string;
let parsed: GgufFile;

beforeAll(async () => {
  file = join(dir, 'tiny-q8_0.gguf');
  await exportGguf({ outPath: file, config: loadModelConfig(modelDir), tokenizerDir: modelDir, tensors: fixtureSources(modelDir), quantization: 'q8_0', name: 'tiny' });
  parsed = readGguf(fileSource(file), file);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('readGguf', () => {
  it('reads the metadata and tensors that @huggingface/gguf reads, and the same tensor bytes', async () => {
    const theirs = await gguf(file, { allowLocalFile: true });
    const meta = theirs.metadata as Record<string, unknown>;
    for (const [key, value] of parsed.metadata) {
      if (key === 'version' || key === 'tensor_count' || key === 'kv_count') continue;
      const other = meta[key];
      expect(typeof other === 'bigint' ? Number(other) : other, key).toEqual(value);
    }
    expect(parsed.metadata.size).toBe(Object.keys(meta).filter((k) => !['version', 'tensor_count', 'kv_count'].includes(k)).length);
    const bytes = await readGgufTensors(file);
    expect(parsed.tensors.size).toBe(bytes.size);
    for (const [name, t] of parsed.tensors) {
      const o = bytes.get(name)!;
      expect(t.type, name).toBe(o.type);
      expect(t.ne, name).toEqual(o.ne);
      // The oracle's slices run to the next tensor (alignment padding included).
      expect(Buffer.from(readGgufTensorBytes(parsed, t)).equals(Buffer.from(o.bytes.subarray(0, t.bytes))), name).toBe(true);
    }
  });

  it('refuses bad files with one line naming the file', () => {
    const good = readFileSync(file);
    const cases: [Uint8Array, RegExp][] = [
      [good.subarray(0, 10), /not a GGUF file/],
      [Uint8Array.from([...Buffer.from('GGML'), ...good.subarray(4, 64)]), /no GGUF magic/],
      [good.subarray(0, good.length - 100), /past the end of the file.*truncated/],
    ];
    const bad = Buffer.from(good);
    bad.writeUInt32LE(7, 4);
    cases.push([bad, /GGUF version 7 is not supported/]);
    for (const [bytes, message] of cases) {
      let error: unknown;
      try {
        readGguf(memorySource(bytes), 'bad.gguf');
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(UserError);
      expect((error as Error).message).toMatch(/^bad\.gguf: /);
      expect((error as Error).message).toMatch(message);
      expect((error as Error).message).not.toContain('\n');
    }
  });
});

describe('tokenizer from GGUF metadata', () => {
  it('encodes, decodes and renders chats as the HF tokenizer it was written from', async () => {
    const hf = await Tokenizer.load(modelDir);
    const files = tokenizerFilesFromGguf(parsed);
    const ours = JsonTokenizer.fromJson(files.json, files.config, file);
    expect(ours.eosTokenId).toBe(hf.eosTokenId);
    expect(ours.vocabSize).toBe(hf.vocabSize);
    const texts = ['Hello world', 'Il numero 579 è pari o dispari?', '  code\n\tindent()', '<|im_start|>user\nhi<|im_end|>', '<think>\n\n</think>\n\n42'];
    for (const t of texts) {
      expect(ours.encode(t), t).toEqual(hf.encode(t));
      expect(ours.decode(ours.encode(t))).toBe(hf.decode(hf.encode(t)));
    }
    const chat: ChatMessage[] = [{ role: 'user', content: 'Is 262 even?' }, { role: 'assistant', content: 'Even.' }];
    expect(ours.applyChatTemplate(chat)).toBe(hf.applyChatTemplate(chat));
  });
});

describe('resolveGgufFile', () => {
  const store = join(dir, 'ollama-models');
  const saved = process.env.OLLAMA_MODELS;
  beforeAll(() => {
    // As Ollama lays a pulled model out: a manifest per name and tag, blobs named by their sha256.
    const blob = readFileSync(file);
    const digest = createHash('sha256').update(blob).digest('hex');
    mkdirSync(join(store, 'blobs'), { recursive: true });
    copyFileSync(file, join(store, 'blobs', `sha256-${digest}`));
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 2 },
      layers: [
        { mediaType: 'application/vnd.ollama.image.model', digest: `sha256:${digest}`, size: blob.length },
        { mediaType: 'application/vnd.ollama.image.template', digest: `sha256:${'1'.repeat(64)}`, size: 10 },
      ],
    };
    for (const at of [['registry.ollama.ai', 'library', 'qwen3', '0.6b'], ['registry.ollama.ai', 'someone', 'tiny', 'latest']]) {
      mkdirSync(join(store, 'manifests', ...at.slice(0, 3)), { recursive: true });
      writeFileSync(join(store, 'manifests', ...at), JSON.stringify(manifest));
    }
    process.env.OLLAMA_MODELS = store;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.OLLAMA_MODELS;
    else process.env.OLLAMA_MODELS = saved;
  });

  it('finds a .gguf file, a folder holding one, and Ollama names in the store', () => {
    expect(resolveGgufFile(file)).toBe(file);
    expect(resolveGgufFile(dir)).toBe(file);
    const blob = resolveGgufFile('qwen3:0.6b')!;
    expect(blob).toMatch(/blobs\/sha256-[0-9a-f]{64}$/);
    expect(readFileSync(blob).equals(readFileSync(file))).toBe(true);
    expect(resolveGgufFile('someone/tiny')).toBe(blob);
  });

  it('leaves HF folders and hub ids alone, and refuses a missing tagged name in one line', () => {
    expect(resolveGgufFile(modelDir)).toBeUndefined();
    expect(resolveGgufFile('Qwen/Qwen3-0.6B')).toBeUndefined();
    expect(() => resolveGgufFile('qwen3:8b')).toThrow(/^model_name_or_path: qwen3:8b is not in the Ollama store .*ollama pull qwen3:8b/);
    expect(() => resolveGgufFile(join(dir, 'missing.gguf'))).toThrow(UserError);
  });
});
