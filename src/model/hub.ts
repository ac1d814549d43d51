// Model source resolution: a local folder, or a Hugging Face hub repo id downloaded into the hub's
// shared cache layout (the one huggingface_hub and transformers use), so both tools reuse each other's files:
//   <cache>/models--{org}--{name}/blobs/<etag>           file contents, named by ETag (sha256 for LFS files)
//   <cache>/models--{org}--{name}/snapshots/<commit>/<f>  relative symlinks to ../../blobs/<etag>
//   <cache>/models--{org}--{name}/refs/<branch>           the commit sha the branch pointed to
import cliProgress from 'cli-progress';
import { createHash } from 'node:crypto';
import {
  closeSync, copyFileSync, createReadStream, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync,
  renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync, writeSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { UserError } from '../errors.js';

const REQUIRED_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json'];
const OPTIONAL_FILES = ['generation_config.json'];
const SINGLE_WEIGHTS = 'model.safetensors';
const WEIGHTS_INDEX = 'model.safetensors.index.json';
/** Files at least this big get a progress bar. */
const PROGRESS_MIN_BYTES = 8 << 20;
/** A download gives up after this many attempts in a row that received no bytes. */
const MAX_STALLED_ATTEMPTS = 3;
const METADATA_TIMEOUT_MS = 10_000;

/** The hub cache folder: $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. */
export function hubCacheDir(): string {
  const env = process.env;
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  const home = env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface');
  return join(home, 'hub');
}

function hubEndpoint(): string {
  return (process.env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '');
}

function isOffline(): boolean {
  return ['1', 'ON', 'YES', 'TRUE'].includes((process.env.HF_HUB_OFFLINE ?? '').toUpperCase());
}

// The hub's own rule for names: letters, digits, '-', '_', '.', no '--' or '..', not starting or ending with '-' or '.'.
const REPO_NAME_PART = /^[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?$/;

/** "owner/name" that is not an existing local path. */
export function isRepoId(s: string): boolean {
  const parts = s.split('/');
  return parts.length === 2 && parts.every((p) => REPO_NAME_PART.test(p) && !p.includes('--') && !p.includes('..')) && !existsSync(s);
}

const isCommitHash = (s: string) => /^[0-9a-f]{40}$/.test(s);

/** "owner/name" when `dir` is a snapshot folder of the hub cache (.../models--owner--name/snapshots/<commit>). */
export function hubRepoIdOfSnapshot(dir: string): string | undefined {
  const m = /(?:^|[\\/])models--([^\\/]+?)--([^\\/]+)[\\/]snapshots[\\/][^\\/]+[\\/]?$/.exec(dir);
  return m ? `${m[1]}/${m[2]}` : undefined;
}

/**
 * The folder holding a model: a local folder as given, or for a hub repo id the snapshot folder in the hub cache,
 * downloaded (resumably) when needed. Offline (HF_HUB_OFFLINE=1, or the hub unreachable) a complete cached snapshot is used.
 */
export async function resolveModelDir(nameOrPath: string, o: { revision?: string; quiet?: boolean } = {}): Promise<string> {
  if (existsSync(nameOrPath)) return nameOrPath;
  if (!isRepoId(nameOrPath)) throw new UserError(`${nameOrPath}: no such folder, and not a hub repo id (owner/name)`);
  const revision = o.revision ?? 'main';
  if (!isSafeRelativePath(revision)) throw new UserError(`${nameOrPath}: invalid revision ${JSON.stringify(revision)}`);
  const repoDir = join(hubCacheDir(), `models--${nameOrPath.replace('/', '--')}`);
  const cached = cachedSnapshot(repoDir, revision);
  if (isOffline()) {
    if (cached) return cached;
    throw new UserError(`${nameOrPath}: offline (HF_HUB_OFFLINE is set) and revision ${revision} is not complete in the cache ${repoDir}`);
  }
  // A commit never changes, so a complete snapshot of one needs no network.
  if (cached && isCommitHash(revision)) return cached;
  try {
    return await new RepoDownload(nameOrPath, revision, repoDir, o.quiet ?? false).run();
  } catch (e) {
    if (!(e instanceof NetworkError)) throw e;
    if (cached) return cached;
    throw new UserError(`${nameOrPath}: cannot download from ${hubEndpoint()} (${e.message}) and the cache ${repoDir} has no complete copy; partial files are kept, so a rerun resumes`);
  }
}

/** The snapshot folder for `revision` (branch or commit) if every needed file is in it. */
function cachedSnapshot(repoDir: string, revision: string): string | undefined {
  const refFile = join(repoDir, 'refs', revision);
  const commit = isCommitHash(revision) ? revision : existsSync(refFile) ? readFileSync(refFile, 'utf8').trim() : undefined;
  if (!commit) return undefined;
  const dir = join(repoDir, 'snapshots', commit);
  // existsSync follows the symlinks, so a link to a missing blob counts as missing.
  if (!REQUIRED_FILES.every((f) => existsSync(join(dir, f)))) return undefined;
  if (existsSync(join(dir, SINGLE_WEIGHTS))) return dir;
  if (!existsSync(join(dir, WEIGHTS_INDEX))) return undefined;
  let shards: string[];
  try {
    shards = shardNames(join(dir, WEIGHTS_INDEX));
  } catch {
    return undefined;
  }
  return shards.every((s) => existsSync(join(dir, s))) ? dir : undefined;
}

/** The distinct shard files named by a model.safetensors.index.json, refusing names that would escape the folder. */
function shardNames(indexFile: string): string[] {
  let map: unknown;
  try {
    map = (JSON.parse(readFileSync(indexFile, 'utf8')) as { weight_map?: unknown }).weight_map;
  } catch (e) {
    throw new UserError(`${indexFile}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof map !== 'object' || map === null) throw new UserError(`${indexFile}: has no "weight_map" object`);
  const shards = new Set(Object.values(map));
  for (const s of shards) if (!isSafeRelativePath(s)) throw new UserError(`${indexFile}: shard name ${JSON.stringify(s)} is not a plain relative file name`);
  return [...shards] as string[];
}

function isSafeRelativePath(s: unknown): s is string {
  return typeof s === 'string' && s !== '' && !s.startsWith('/') && !s.includes('\\') && s.split('/').every((p) => p !== '' && p !== '.' && p !== '..');
}

/** The hub could not be reached, or the connection broke: the caller may fall back to the cache. */
class NetworkError extends Error {}

/** What a HEAD on /resolve/ says about one file. */
interface RemoteFile {
  commit: string;
  /** Blob name: the ETag without quotes (the sha256 for LFS files, a git sha1 for small ones). */
  blob: string;
  size?: number;
  /** Where to GET the bytes (a CDN URL for LFS files). */
  url: string;
}

class RepoDownload {
  private readonly endpoint = hubEndpoint();
  private readonly token = process.env.HF_TOKEN || undefined;

  constructor(
    private readonly repoId: string,
    private readonly revision: string,
    private readonly repoDir: string,
    private readonly quiet: boolean,
  ) {}

  async run(): Promise<string> {
    // The first file fixes the commit; the rest are fetched at that commit so the snapshot is consistent.
    const config = await this.metadata('config.json', this.revision);
    if (!config) throw new UserError(`${this.repoId}: no config.json at revision ${this.revision} on ${this.endpoint} (not a transformers model?)`);
    const commit = config.commit;
    const snapshot = join(this.repoDir, 'snapshots', commit);
    await this.fetchFile('config.json', config, snapshot);
    for (const f of REQUIRED_FILES.slice(1)) await this.fetchRequired(f, commit, snapshot);
    for (const f of OPTIONAL_FILES) {
      const remote = await this.metadata(f, commit);
      if (remote) await this.fetchFile(f, remote, snapshot);
    }
    const single = await this.metadata(SINGLE_WEIGHTS, commit);
    if (single) await this.fetchFile(SINGLE_WEIGHTS, single, snapshot);
    else {
      const index = await this.metadata(WEIGHTS_INDEX, commit);
      if (!index) throw new UserError(`${this.repoId}: neither ${SINGLE_WEIGHTS} nor ${WEIGHTS_INDEX} at revision ${this.revision} (only safetensors weights are supported)`);
      await this.fetchFile(WEIGHTS_INDEX, index, snapshot);
      for (const shard of shardNames(join(snapshot, WEIGHTS_INDEX))) await this.fetchRequired(shard, commit, snapshot);
    }
    // The ref moves only once the snapshot is complete, so offline use never lands on a half-downloaded commit.
    if (!isCommitHash(this.revision)) {
      const refFile = join(this.repoDir, 'refs', this.revision);
      mkdirSync(dirname(refFile), { recursive: true });
      writeFileSync(refFile, commit);
    }
    return snapshot;
  }

  private async fetchRequired(file: string, commit: string, snapshot: string): Promise<void> {
    const remote = await this.metadata(file, commit);
    if (!remote) throw new UserError(`${this.repoId}: ${file} is missing at revision ${this.revision}`);
    await this.fetchFile(file, remote, snapshot);
  }

  private headers(url: string, extra: Record<string, string> = {}): Record<string, string> {
    // identity: sizes and byte ranges must refer to the stored bytes, not a compressed stream.
    const h: Record<string, string> = { 'User-Agent': 'loraforge', 'Accept-Encoding': 'identity', ...extra };
    // The token is for the hub only, never for the CDN a file redirects to.
    if (this.token && new URL(url).origin === new URL(this.endpoint).origin) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  private async request(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch (e) {
      throw new NetworkError(describeNetworkError(e));
    }
  }

  /** HEAD /{repo}/resolve/{revision}/{file}; undefined when the file does not exist in the repo. */
  private async metadata(file: string, revision: string): Promise<RemoteFile | undefined> {
    let url = `${this.endpoint}/${this.repoId}/resolve/${encodeURIComponent(revision)}/${file.split('/').map(encodeURIComponent).join('/')}`;
    for (let hops = 0; ; hops++) {
      const res = await this.request(url, { method: 'HEAD', redirect: 'manual', headers: this.headers(url), signal: AbortSignal.timeout(METADATA_TIMEOUT_MS) });
      const location = res.headers.get('location');
      // Relative redirects stay on the hub (a renamed repo); an absolute one is the CDN holding the file's bytes.
      if (res.status >= 300 && res.status < 400 && location && !/^[a-z][a-z\d+.-]*:/i.test(location) && hops < 5) {
        url = new URL(location, url).href;
        continue;
      }
      // A failing hub is like an unreachable one: the cache may still serve.
      if (res.status >= 500) throw new NetworkError(`HTTP ${res.status} from ${url}`);
      if (res.status >= 400) return this.refused(res, file);
      const redirected = res.status >= 300 && res.status < 400 && location !== null;
      const commit = res.headers.get('x-repo-commit');
      const etag = res.headers.get('x-linked-etag') ?? res.headers.get('etag');
      const blob = etag?.replace(/^W\//, '').replace(/"/g, '');
      if (!commit || !blob) throw new UserError(`${url}: no X-Repo-Commit or ETag header in the answer (is HF_ENDPOINT=${this.endpoint} a Hugging Face hub?)`);
      if (!isCommitHash(commit) || !/^[\w.-]+$/.test(blob) || blob.startsWith('.')) throw new UserError(`${url}: unexpected commit ${JSON.stringify(commit)} or ETag ${JSON.stringify(etag)}`);
      const sizeHeader = res.headers.get('x-linked-size') ?? (redirected ? null : res.headers.get('content-length'));
      return { commit, blob, size: sizeHeader === null ? undefined : Number(sizeHeader), url: redirected ? new URL(location, url).href : url };
    }
  }

  /** An HTTP error answer: undefined for a missing file, a UserError one-liner for everything else. */
  private refused(res: Response, file: string): undefined {
    const code = res.headers.get('x-error-code');
    const tokenHint = this.token ? 'HF_TOKEN is set but was not accepted for it' : 'set HF_TOKEN to an access token';
    if (code === 'EntryNotFound' || (res.status === 404 && !code)) return undefined;
    if (code === 'RepoNotFound') throw new UserError(`${this.repoId}: no such local folder, and no such repository on ${this.endpoint} (if it is private or gated, ${tokenHint})`);
    if (code === 'RevisionNotFound') throw new UserError(`${this.repoId}: revision ${this.revision} not found`);
    if (code === 'GatedRepo' || res.status === 401 || res.status === 403) {
      throw new UserError(`${this.repoId}: access denied (HTTP ${res.status}): the repository is gated or private; accept its terms at ${this.endpoint}/${this.repoId} and ${tokenHint}`);
    }
    throw new UserError(`${this.repoId}: HTTP ${res.status} ${res.statusText} fetching ${file}`);
  }

  /** Make snapshot/<file> point at its blob, downloading the blob unless the cache has it. */
  private async fetchFile(file: string, remote: RemoteFile, snapshot: string): Promise<void> {
    const blobPath = join(this.repoDir, 'blobs', remote.blob);
    if (!existsSync(blobPath)) await this.downloadBlob(file, remote, blobPath);
    linkIntoSnapshot(join(snapshot, file), blobPath);
  }

  /** Download into blobs/<name>.incomplete, resuming from its size; rename only once complete and checked. */
  private async downloadBlob(file: string, remote: RemoteFile, blobPath: string): Promise<void> {
    mkdirSync(dirname(blobPath), { recursive: true });
    const partial = `${blobPath}.incomplete`;
    const bar = !this.quiet && process.stderr.isTTY && (remote.size ?? 0) >= PROGRESS_MIN_BYTES ? newProgressBar(file, remote.size!) : undefined;
    try {
      for (let stalled = 0; ; ) {
        const before = existsSync(partial) ? statSync(partial).size : 0;
        try {
          await this.downloadRest(file, remote, partial, bar);
          break;
        } catch (e) {
          const after = existsSync(partial) ? statSync(partial).size : 0;
          stalled = after > before ? 0 : stalled + 1;
          if (!(e instanceof NetworkError) || stalled >= MAX_STALLED_ATTEMPTS) throw e;
          await new Promise((r) => setTimeout(r, 250 * (stalled + 1)));
        }
      }
    } finally {
      bar?.stop();
    }
    const size = statSync(partial).size;
    if (remote.size !== undefined && size !== remote.size) {
      unlinkSync(partial);
      throw new UserError(`${this.repoId}/${file}: downloaded ${size} bytes, the hub announced ${remote.size}; run again`);
    }
    // LFS blobs are named by their sha256: check it, since the bytes may come from several resumed requests.
    if (/^[0-9a-f]{64}$/.test(remote.blob) && (await sha256File(partial)) !== remote.blob) {
      unlinkSync(partial);
      throw new UserError(`${this.repoId}/${file}: downloaded bytes do not match the sha256 ${remote.blob}; run again`);
    }
    renameSync(partial, blobPath);
  }

  /** One GET of the bytes not yet in `partial` (a Range request when some are). */
  private async downloadRest(file: string, remote: RemoteFile, partial: string, bar: cliProgress.SingleBar | undefined): Promise<void> {
    let have = existsSync(partial) ? statSync(partial).size : 0;
    if (remote.size !== undefined && have === remote.size) return;
    if (remote.size !== undefined && have > remote.size) have = 0;
    const res = await this.request(remote.url, { headers: this.headers(remote.url, have > 0 ? { Range: `bytes=${have}-` } : {}) });
    if (res.status === 200) have = 0;
    else if (res.status === 206) {
      const start = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1];
      if (Number(start) !== have) throw new UserError(`${this.repoId}/${file}: asked for bytes from ${have}, got Content-Range ${res.headers.get('content-range')}`);
    } else if (res.status === 416 && have > 0) {
      // The partial file is longer than the remote one: start over.
      unlinkSync(partial);
      throw new NetworkError('range not satisfiable, restarting');
    } else if (res.status >= 500) throw new NetworkError(`HTTP ${res.status} from ${remote.url}`);
    else if (res.status >= 400) this.refused(res, file);
    if (!res.body || (res.status !== 200 && res.status !== 206)) throw new UserError(`${this.repoId}/${file}: HTTP ${res.status} from ${remote.url}`);
    const fd = openSync(partial, have > 0 ? 'a' : 'w');
    bar?.update(have);
    try {
      const reader = res.body.getReader();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw new NetworkError(describeNetworkError(e));
        }
        if (chunk.done) break;
        writeSync(fd, chunk.value);
        have += chunk.value.byteLength;
        bar?.update(have);
      }
    } finally {
      closeSync(fd);
    }
  }
}

function describeNetworkError(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  if (err.name === 'TimeoutError') return 'timed out';
  return err.cause?.code ?? err.cause?.message ?? err.message;
}

/** snapshots/<commit>/<file> -> relative link to the blob (a copy where symlinks are not allowed). */
function linkIntoSnapshot(link: string, blobPath: string): void {
  const target = relative(dirname(link), blobPath);
  if (existsSync(link) && lstatSync(link).isSymbolicLink() && readlinkSync(link) === target) return;
  mkdirSync(dirname(link), { recursive: true });
  rmSync(link, { force: true });
  try {
    symlinkSync(target, link);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
    copyFileSync(blobPath, link);
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function formatBytes(n: number): string {
  return n >= 1 << 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

function newProgressBar(file: string, size: number): cliProgress.SingleBar {
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: `${file} |{bar}| {percentage}% | {value} / {total} | ETA {eta_formatted}`,
    formatValue: (v, _options, type) => (type === 'value' || type === 'total' ? formatBytes(v) : String(v)),
    hideCursor: true,
    etaBuffer: 50,
  }, cliProgress.Presets.shades_classic);
  bar.start(size, 0);
  return bar;
}
