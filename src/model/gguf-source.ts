// Where a GGUF base comes from: a .gguf file, a folder holding one, or an Ollama model name (`qwen3:0.6b`,
// `namespace/model:tag`, `host/namespace/model:tag`) resolved through the local Ollama store as Ollama lays it
// out: `<store>/manifests/<host>/<namespace>/<model>/<tag>` is an OCI-style JSON manifest whose layer of media
// type application/vnd.ollama.image.model names the GGUF blob, stored as `<store>/blobs/sha256-<hex>`.
// The store is OLLAMA_MODELS, else ~/.ollama/models.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileError, UserError } from '../errors.js';
import { readJsonFile } from '../json-file.js';

const MODEL_LAYER = 'application/vnd.ollama.image.model';
const ADAPTER_LAYER = 'application/vnd.ollama.image.adapter';
const DEFAULT_HOST = 'registry.ollama.ai';
const DEFAULT_NAMESPACE = 'library';
const OLLAMA_NAME = /^(?:([\w.-]+(?::\d+)?)\/)?(?:([\w.-]+)\/)?([\w.-]+)(?::([\w.-]+))?$/;

export function ollamaStore(): string {
  const env = process.env.OLLAMA_MODELS;
  return env && env.trim() !== '' ? env : path.join(os.homedir(), '.ollama', 'models');
}

/** The manifest path of an Ollama name, or undefined when the text is not one. */
function manifestPath(store: string, name: string): string | undefined {
  const m = OLLAMA_NAME.exec(name);
  if (!m) return undefined;
  const [, first, second, model, tag] = m;
  // One prefix is a namespace (user/model); two are host/namespace.
  const host = second === undefined ? DEFAULT_HOST : first!;
  const namespace = second ?? first ?? DEFAULT_NAMESPACE;
  return path.join(store, 'manifests', host, namespace, model!, tag ?? 'latest');
}

/**
 * The GGUF file that `nameOrPath` names, or undefined when it names none (an HF folder or hub id). A name with a
 * tag (`model:tag`) must be in the Ollama store; one without is looked up there and otherwise left to the hub.
 */
export function resolveGgufFile(nameOrPath: string): string | undefined {
  if (fs.existsSync(nameOrPath)) {
    const stat = fs.statSync(nameOrPath);
    if (stat.isFile()) return nameOrPath.toLowerCase().endsWith('.gguf') || isGgufFile(nameOrPath) ? nameOrPath : undefined;
    // An HF folder may also hold an exported GGUF: its safetensors win.
    if (fs.existsSync(path.join(nameOrPath, 'config.json'))) return undefined;
    const ggufs = fs.readdirSync(nameOrPath).filter((f) => f.toLowerCase().endsWith('.gguf'));
    if (ggufs.length === 0) return undefined;
    if (ggufs.length > 1) throw new UserError(`model_name_or_path: ${nameOrPath} holds ${ggufs.length} GGUF files (${ggufs.join(', ')}): name one of them`);
    return path.join(nameOrPath, ggufs[0]!);
  }
  if (nameOrPath.toLowerCase().endsWith('.gguf')) throw new UserError(`model_name_or_path: ${nameOrPath} does not exist`);
  const store = ollamaStore();
  const manifest = manifestPath(store, nameOrPath);
  if (!manifest) return undefined;
  const tagged = /:[\w.-]+$/.test(nameOrPath);
  if (!fs.existsSync(manifest)) {
    if (tagged) throw new UserError(`model_name_or_path: ${nameOrPath} is not in the Ollama store ${store} (no ${manifest}; run \`ollama pull ${nameOrPath}\`, or set OLLAMA_MODELS)`);
    return undefined;
  }
  return ollamaModelBlob(store, manifest);
}

/** The model blob a manifest names. */
function ollamaModelBlob(store: string, manifest: string): string {
  const json = readJsonFile(manifest) as { layers?: { mediaType?: string; digest?: string }[] };
  const layers = Array.isArray(json.layers) ? json.layers : [];
  if (layers.some((l) => l.mediaType === ADAPTER_LAYER)) throw fileError(manifest, 'the Ollama model has an adapter layer: train on its base model instead');
  const model = layers.find((l) => l.mediaType === MODEL_LAYER);
  if (!model || typeof model.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(model.digest)) {
    throw fileError(manifest, `no ${MODEL_LAYER} layer with a sha256 digest`);
  }
  const blob = path.join(store, 'blobs', model.digest.replace(':', '-'));
  if (!fs.existsSync(blob)) throw fileError(manifest, `its model blob ${blob} is missing`);
  return blob;
}

function isGgufFile(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const magic = Buffer.alloc(4);
    return fs.readSync(fd, magic, 0, 4, 0) === 4 && magic.toString('latin1') === 'GGUF';
  } finally {
    fs.closeSync(fd);
  }
}
