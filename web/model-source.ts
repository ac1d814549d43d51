// Model files in the browser: a local folder's File objects or a hub repo's files fetched as Blobs, read by
// byte ranges with FileReaderSync (workers only), so multi-GB checkpoints are never copied whole into memory.
import { UserError } from '../src/errors.js';
import { SafetensorsReader, type ByteSource } from '../src/model/safetensors-format.js';

/** Byte ranges of a Blob (a File or a downloaded body), read synchronously inside a worker. */
export function blobSource(blob: Blob): ByteSource {
  const reader = new FileReaderSync();
  return { size: blob.size, read: (offset, length) => new Uint8Array(reader.readAsArrayBuffer(blob.slice(offset, offset + length))) };
}

/** A model folder's files by name (the last path component). */
export type ModelFiles = Map<string, Blob>;

export function filesByName(files: File[]): ModelFiles {
  return new Map(files.map((f) => [f.name.split('/').pop()!, f as Blob]));
}

export async function readJsonFile(files: ModelFiles, name: string, required: boolean): Promise<any> {
  const blob = files.get(name);
  if (!blob) {
    if (required) throw new UserError(`the model folder has no ${name}`);
    return undefined;
  }
  try {
    return JSON.parse(await blob.text());
  } catch (e) {
    throw new UserError(`${name}: not valid JSON (${(e as Error).message})`);
  }
}

/** The checkpoint of a folder: model.safetensors.index.json with its shards, or a single .safetensors file. */
export async function openCheckpoint(files: ModelFiles, label: string): Promise<SafetensorsReader> {
  const reader = new SafetensorsReader(label);
  const index = await readJsonFile(files, 'model.safetensors.index.json', false);
  if (index !== undefined) {
    reader.addIndex('model.safetensors.index.json', index, (shard) => {
      const blob = files.get(shard);
      return blob && { file: shard, source: blobSource(blob) };
    });
    return reader;
  }
  const single = files.has('model.safetensors') ? 'model.safetensors' : [...files.keys()].filter((n) => n.endsWith('.safetensors'));
  const name = typeof single === 'string' ? single : single.length === 1 ? single[0]! : undefined;
  if (!name) throw new UserError(`${label}: expected model.safetensors, one .safetensors file, or model.safetensors.index.json with its shards`);
  reader.addFile(name, blobSource(files.get(name)!));
  return reader;
}

const HUB = 'https://huggingface.co';

/** The files of a hub repo (main branch) that loading needs, fetched into Blobs. */
export async function fetchHubRepo(repo: string, status: (text: string) => void): Promise<ModelFiles> {
  if (!/^[\w.-]+\/[\w.-]+$/.test(repo)) throw new UserError(`'${repo}' is not a hub repo id (owner/name)`);
  const files: ModelFiles = new Map();
  const fetchFile = async (name: string, optional = false): Promise<Blob | undefined> => {
    status(`downloading ${repo}/${name}`);
    let res: Response;
    try {
      res = await fetch(`${HUB}/${repo}/resolve/main/${name}`);
    } catch (e) {
      throw new UserError(`cannot reach ${HUB} (${(e as Error).message}): offline? Use a local folder instead`);
    }
    if (res.status === 404 && optional) return undefined;
    if (!res.ok) throw new UserError(`${repo}/${name}: HTTP ${res.status}${res.status === 401 ? ' (gated or private repos need a local download)' : ''}`);
    const blob = await res.blob();
    files.set(name, blob);
    return blob;
  };
  for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) await fetchFile(name);
  const index = await fetchFile('model.safetensors.index.json', true);
  if (index) {
    const shards = new Set(Object.values((JSON.parse(await index.text()) as { weight_map?: Record<string, string> }).weight_map ?? {}));
    for (const shard of shards) await fetchFile(shard);
  } else await fetchFile('model.safetensors');
  return files;
}
