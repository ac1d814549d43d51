// Hub downloads against a local server that answers like huggingface.co: /{repo}/resolve/{revision}/{file},
// X-Repo-Commit and ETag headers, LFS files redirected to a CDN (a second server, so another origin) with Range support.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { loadModelConfig } from '../src/model/config.js';
import { hubCacheDir, isRepoId, resolveModelDir } from '../src/model/hub.js';
import { Checkpoint, writeSafetensors } from '../src/model/safetensors.js';
import { FIXTURES } from './helpers.js';

const FIXTURE = `${FIXTURES}/tiny-tied/model`;
const REPO = 'fixture-org/tiny-qwen3';
const tmp = mkdtempSync(join(tmpdir(), 'hub-test-'));

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const gitBlobSha = (b: Uint8Array) => createHash('sha1').update(`blob ${b.byteLength}\0`).update(b).digest('hex');
const fakeCommit = (seed: string) => createHash('sha1').update(seed).digest('hex');

interface ServedRepo {
  dir: string;
  commit: string;
}
interface Logged {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  range?: string;
  auth?: string;
}

const repos = new Map<string, ServedRepo>();
const cdnFiles = new Map<string, string>();
let requests: Logged[] = [];
/** Break CDN downloads at this byte offset of the file, `times` times. */
let cut: { offset: number; times: number } | undefined;
let hub: Server;
let cdn: Server;
const origin = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

/** 200 with the bytes, or 206 with the tail asked for by `Range: bytes=N-`; HEAD gets the headers only. */
function sendBytes(req: IncomingMessage, res: ServerResponse, bytes: Buffer, headers: Record<string, string>, cuttable: boolean): void {
  const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
  res.writeHead(start > 0 ? 206 : 200, {
    ...headers,
    'Content-Length': String(bytes.byteLength - start),
    'Accept-Ranges': 'bytes',
    ...(start > 0 ? { 'Content-Range': `bytes ${start}-${bytes.byteLength - 1}/${bytes.byteLength}` } : {}),
  });
  if (req.method === 'HEAD') return void res.end();
  if (cuttable && cut && cut.times > 0 && start <= cut.offset) {
    cut.times--;
    res.write(bytes.subarray(start, cut.offset), () => res.socket?.destroy());
    return;
  }
  res.end(bytes.subarray(start));
}

function hubHandler(req: IncomingMessage, res: ServerResponse): void {
  const path = new URL(req.url!, 'http://x').pathname;
  requests.push({ server: 'hub', method: req.method!, path, range: req.headers.range, auth: req.headers.authorization });
  const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
  const error = (status: number, code: string, extra: Record<string, string> = {}): void => {
    res.writeHead(status, { 'X-Error-Code': code, ...extra }).end();
  };
  if (!m) return error(404, 'RepoNotFound');
  const [repoId, revision, file] = [m[1]!, decodeURIComponent(m[2]!), decodeURIComponent(m[3]!)];
  if (repoId === 'fixture-org/gated' && !req.headers.authorization) return error(401, 'GatedRepo');
  const repo = repos.get(repoId);
  if (!repo) return error(401, 'RepoNotFound');
  if (revision !== 'main' && revision !== repo.commit) return error(404, 'RevisionNotFound');
  const local = join(repo.dir, file);
  if (!existsSync(local)) return error(404, 'EntryNotFound', { 'X-Repo-Commit': repo.commit });
  const bytes = readFileSync(local);
  if (file.endsWith('.safetensors')) {
    // LFS file: the hub redirects to a CDN URL and names the blob by its sha256.
    const sha = sha256(bytes);
    cdnFiles.set(sha, local);
    res.writeHead(302, {
      Location: `${origin(cdn)}/cdn/${sha}`,
      'X-Repo-Commit': repo.commit,
      'X-Linked-Etag': `"${sha}"`,
      'X-Linked-Size': String(bytes.byteLength),
      ETag: `W/"${gitBlobSha(bytes)}"`,
    }).end();
    return;
  }
  sendBytes(req, res, bytes, { 'X-Repo-Commit': repo.commit, ETag: `"${gitBlobSha(bytes)}"` }, false);
}

function cdnHandler(req: IncomingMessage, res: ServerResponse): void {
  const path = new URL(req.url!, 'http://x').pathname;
  requests.push({ server: 'cdn', method: req.method!, path, range: req.headers.range, auth: req.headers.authorization });
  const file = cdnFiles.get(path.replace('/cdn/', ''));
  if (!file) return void res.writeHead(404).end();
  sendBytes(req, res, readFileSync(file), {}, true);
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** A fresh, empty HF_HOME. */
function freshCache(): string {
  const home = mkdtempSync(join(tmp, 'home-'));
  process.env.HF_HOME = home;
  return join(home, 'hub');
}

async function userError(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(UserError);
  return (err as Error).message;
}

const savedEnv = { ...process.env };
beforeAll(async () => {
  hub = await listen(hubHandler);
  cdn = await listen(cdnHandler);
});
afterAll(async () => {
  process.env = savedEnv;
  await Promise.all([hub, cdn].map((s) => new Promise((r) => s.close(r))));
  rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  for (const k of ['HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'HF_TOKEN', 'XDG_CACHE_HOME']) delete process.env[k];
  process.env.HF_ENDPOINT = origin(hub);
  repos.clear();
  repos.set(REPO, { dir: FIXTURE, commit: fakeCommit('first') });
  requests = [];
  cut = undefined;
});

const repoCache = (cache: string) => join(cache, 'models--fixture-org--tiny-qwen3');
const fixtureBytes = (file: string) => readFileSync(join(FIXTURE, file));
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

describe('names and cache location', () => {
  it('tells repo ids from local paths', () => {
    expect(isRepoId('Qwen/Qwen3-0.6B')).toBe(true);
    expect(isRepoId('org/name.v2_x')).toBe(true);
    for (const s of ['Qwen3-0.6B', 'a/b/c', './x', '/abs/path', 'a--b/c', 'a/..', 'org/-x', '', 'org/']) expect(isRepoId(s), s).toBe(false);
    mkdirSync(join(tmp, 'local', 'model'), { recursive: true });
    const cwd = process.cwd();
    process.chdir(tmp);
    try {
      expect(isRepoId('local/model')).toBe(false);
    } finally {
      process.chdir(cwd);
    }
  });

  it('finds the cache as huggingface_hub does', () => {
    process.env.HF_HOME = '/h';
    expect(hubCacheDir()).toBe('/h/hub');
    process.env.HF_HUB_CACHE = '/c';
    expect(hubCacheDir()).toBe('/c');
    delete process.env.HF_HUB_CACHE;
    delete process.env.HF_HOME;
    process.env.XDG_CACHE_HOME = '/x';
    expect(hubCacheDir()).toBe('/x/huggingface/hub');
  });

  it('returns a local folder as is and refuses what is neither', async () => {
    expect(await resolveModelDir(FIXTURE)).toBe(FIXTURE);
    expect(await userError(resolveModelDir('no/such/folder'))).toMatch(/no such folder, and not a hub repo id/);
    expect(requests).toHaveLength(0);
  });
});

describe('download', () => {
  it('lays out blobs, snapshots and refs like huggingface_hub, and the snapshot loads', async () => {
    const cache = freshCache();
    const commit = repos.get(REPO)!.commit;
    const snapshot = await resolveModelDir(REPO, { quiet: true });
    const repoDir = repoCache(cache);
    expect(snapshot).toBe(join(repoDir, 'snapshots', commit));
    expect(readFileSync(join(repoDir, 'refs', 'main'), 'utf8')).toBe(commit);
    expect(readdirSync(snapshot).sort()).toEqual(readdirSync(FIXTURE).sort());
    for (const file of readdirSync(FIXTURE)) {
      const bytes = fixtureBytes(file);
      const blob = file.endsWith('.safetensors') ? sha256(bytes) : gitBlobSha(bytes);
      expect(lstatSync(join(snapshot, file)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(snapshot, file))).toBe(`../../blobs/${blob}`);
      expect(readFileSync(join(repoDir, 'blobs', blob)).equals(bytes)).toBe(true);
    }
    expect(readdirSync(join(repoDir, 'blobs')).some((f) => f.endsWith('.incomplete'))).toBe(false);
    // The weights came from the CDN without the token; the hub saw every file.
    expect(requests.filter((r) => r.server === 'cdn' && r.method === 'GET')).toHaveLength(1);

    expect(loadModelConfig(snapshot)).toEqual(loadModelConfig(FIXTURE));
    const [got, want] = [Checkpoint.open(snapshot), Checkpoint.open(FIXTURE)];
    try {
      expect([...got.tensors.keys()].sort()).toEqual([...want.tensors.keys()].sort());
      for (const name of want.tensors.keys()) expect(sameBytes(got.readBytes(name), want.readBytes(name)), name).toBe(true);
    } finally {
      got.close();
      want.close();
    }
  });

  it('sends HF_TOKEN to the hub only, not to the CDN', async () => {
    freshCache();
    process.env.HF_TOKEN = 'hf_test';
    await resolveModelDir(REPO, { quiet: true });
    const byServer = (s: Logged['server']) => requests.filter((r) => r.server === s);
    expect(byServer('hub').length).toBeGreaterThan(0);
    expect(byServer('hub').every((r) => r.auth === 'Bearer hf_test')).toBe(true);
    expect(byServer('cdn').length).toBeGreaterThan(0);
    expect(byServer('cdn').every((r) => r.auth === undefined)).toBe(true);
  });

  it('reuses cached blobs, pins a commit without the network, and follows a new commit', async () => {
    const cache = freshCache();
    const first = await resolveModelDir(REPO, { quiet: true });
    requests = [];
    expect(await resolveModelDir(REPO, { quiet: true })).toBe(first);
    expect(requests.every((r) => r.method === 'HEAD')).toBe(true);

    requests = [];
    expect(await resolveModelDir(REPO, { revision: repos.get(REPO)!.commit, quiet: true })).toBe(first);
    expect(requests).toHaveLength(0);

    const second = fakeCommit('second');
    repos.get(REPO)!.commit = second;
    const snapshot = await resolveModelDir(REPO, { quiet: true });
    expect(snapshot).toBe(join(repoCache(cache), 'snapshots', second));
    expect(readFileSync(join(repoCache(cache), 'refs', 'main'), 'utf8')).toBe(second);
    expect(requests.filter((r) => r.method === 'GET')).toHaveLength(0);
    expect(realpathSync(join(snapshot, 'model.safetensors'))).toBe(realpathSync(join(first, 'model.safetensors')));
  });

  it('resumes an interrupted download with a Range request', async () => {
    const cache = freshCache();
    cut = { offset: 100_000, times: 1 };
    const snapshot = await resolveModelDir(REPO, { quiet: true });
    const gets = requests.filter((r) => r.server === 'cdn' && r.method === 'GET');
    expect(gets.map((r) => r.range)).toEqual([undefined, 'bytes=100000-']);
    expect(readFileSync(join(snapshot, 'model.safetensors')).equals(fixtureBytes('model.safetensors'))).toBe(true);
    expect(readdirSync(join(repoCache(cache), 'blobs')).some((f) => f.endsWith('.incomplete'))).toBe(false);
  });

  it('keeps a partial download under .incomplete when the connection keeps failing, and a rerun finishes it', async () => {
    const cache = freshCache();
    cut = { offset: 100_000, times: Infinity };
    expect(await userError(resolveModelDir(REPO, { quiet: true }))).toMatch(/cannot download .* a rerun resumes/);
    const blob = join(repoCache(cache), 'blobs', sha256(fixtureBytes('model.safetensors')));
    expect(existsSync(blob)).toBe(false);
    expect(statSync(`${blob}.incomplete`).size).toBe(100_000);
    expect(existsSync(join(repoCache(cache), 'refs', 'main'))).toBe(false);

    cut = undefined;
    requests = [];
    const snapshot = await resolveModelDir(REPO, { quiet: true });
    expect(requests.filter((r) => r.server === 'cdn' && r.method === 'GET').map((r) => r.range)).toEqual(['bytes=100000-']);
    expect(readFileSync(join(snapshot, 'model.safetensors')).equals(fixtureBytes('model.safetensors'))).toBe(true);
    expect(existsSync(`${blob}.incomplete`)).toBe(false);
  });

  it('downloads every shard of a sharded checkpoint', async () => {
    const dir = mkdtempSync(join(tmp, 'sharded-'));
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(FIXTURE, f), join(dir, f));
    const source = Checkpoint.open(FIXTURE);
    const names = [...source.tensors.keys()].sort();
    const shardOf = (i: number) => `model-0000${i < names.length / 2 ? 1 : 2}-of-00002.safetensors`;
    for (const shard of [shardOf(0), shardOf(names.length - 1)]) {
      const tensors = names.filter((_, i) => shardOf(i) === shard).map((name) => {
        const t = source.info(name);
        return { name, dtype: t.dtype, shape: t.shape, data: source.readBytes(name) };
      });
      writeSafetensors(join(dir, shard), tensors);
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(names.map((n, i) => [n, shardOf(i)])) }));
    repos.set('fixture-org/sharded', { dir, commit: fakeCommit('sharded') });

    freshCache();
    const snapshot = await resolveModelDir('fixture-org/sharded', { quiet: true });
    expect(readdirSync(snapshot).sort()).toEqual(readdirSync(dir).sort());
    expect(requests.filter((r) => r.server === 'cdn' && r.method === 'GET')).toHaveLength(2);
    const got = Checkpoint.open(snapshot);
    try {
      expect([...got.tensors.keys()].sort()).toEqual(names);
      for (const name of names) expect(sameBytes(got.readBytes(name), source.readBytes(name)), name).toBe(true);
    } finally {
      got.close();
      source.close();
    }
  });

  it('explains a missing or gated repository', async () => {
    freshCache();
    const missing = await userError(resolveModelDir('fixture-org/missing', { quiet: true }));
    expect(missing).toMatch(/^fixture-org\/missing: no such local folder, and no such repository on http:\/\/127\.0\.0\.1:\d+ .*HF_TOKEN/);
    const gated = await userError(resolveModelDir('fixture-org/gated', { quiet: true }));
    expect(gated).toMatch(/^fixture-org\/gated: access denied \(HTTP 401\).*gated.*set HF_TOKEN/);
    const revision = await userError(resolveModelDir(REPO, { revision: 'nope', quiet: true }));
    expect(revision).toMatch(/revision nope not found/);
  });
});

describe('offline', () => {
  it('HF_HUB_OFFLINE=1 uses the cache without a request, and fails clearly without one', async () => {
    freshCache();
    const snapshot = await resolveModelDir(REPO, { quiet: true });
    process.env.HF_HUB_OFFLINE = '1';
    requests = [];
    expect(await resolveModelDir(REPO, { quiet: true })).toBe(snapshot);
    expect(requests).toHaveLength(0);

    const cache = freshCache();
    const message = await userError(resolveModelDir(REPO, { quiet: true }));
    expect(message).toBe(`${REPO}: offline (HF_HUB_OFFLINE is set) and revision main is not complete in the cache ${repoCache(cache)}`);
    expect(requests).toHaveLength(0);
  });

  it('falls back to the cache when the hub cannot be reached', async () => {
    freshCache();
    const snapshot = await resolveModelDir(REPO, { quiet: true });
    // A port nothing listens on: take a free one and close it again.
    const closed = await listen(hubHandler);
    const deadEndpoint = origin(closed);
    await new Promise((r) => closed.close(r));
    process.env.HF_ENDPOINT = deadEndpoint;
    expect(await resolveModelDir(REPO, { quiet: true })).toBe(snapshot);

    freshCache();
    const message = await userError(resolveModelDir(REPO, { quiet: true }));
    expect(message.startsWith(`${REPO}: cannot download from ${deadEndpoint} (ECONNREFUSED) and the cache `)).toBe(true);
  });

  it('does not use a snapshot with a missing blob', async () => {
    const cache = freshCache();
    const snapshot = await resolveModelDir(REPO, { quiet: true });
    rmSync(realpathSync(join(snapshot, 'tokenizer.json')));
    process.env.HF_HUB_OFFLINE = '1';
    expect(await userError(resolveModelDir(REPO, { quiet: true }))).toMatch(/not complete in the cache/);
    delete process.env.HF_HUB_OFFLINE;
    expect(await resolveModelDir(REPO, { quiet: true })).toBe(snapshot);
    expect(readFileSync(join(snapshot, 'tokenizer.json')).equals(fixtureBytes('tokenizer.json'))).toBe(true);
    expect(existsSync(repoCache(cache))).toBe(true);
  });
});
