/**
 * A Hugging Face hub on 127.0.0.1 for the tests: the parts of its HTTP protocol that clients use,
 * answered the way huggingface.co answers them.
 *  - GET /api/{models,datasets,spaces}/<org>/<name>[/revision/<rev>]      repo info ({ id, sha, gated, siblings, ... })
 *  - GET /api/<kind>/<org>/<name>/tree/<rev>[/<folder>]?recursive=       the listing ({ type, oid, size, path, lfs? }),
 *                                                                         paged with a Link: <...>; rel="next" header
 *  - HEAD/GET /[datasets/|spaces/]<org>/<name>/resolve/<rev>/<file>     a plain file: 200 with ETag (the git blob id) and
 *                                                                         X-Repo-Commit; an LFS file: 302 to a second server
 *                                                                         (the "CDN") with X-Linked-Etag (its SHA-256),
 *                                                                         X-Linked-Size and X-Repo-Commit
 *  - Range requests (206 / 416), and errors with X-Error-Code (GatedRepo, RepoNotFound, RevisionNotFound, EntryNotFound).
 * Faults (dropped connections, corrupted or oversized bodies, stalls, error statuses) are injected per file.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type RepoKind = 'model' | 'dataset' | 'space';

export interface ServedRepo {
  /** `org/name` */
  id: string;
  type?: RepoKind;
  files: Record<string, Buffer>;
  /** Default: a hash of the files. `main` and the commit itself always resolve to it. */
  commit?: string;
  /** More revision names for the commit (tags, branches). */
  revisions?: string[];
  /** Files need a token from `tokens` (401 without one, 403 with another). */
  gated?: boolean;
  tokens?: string[];
  /** Raw listing entries added after the real ones (what a hostile mirror could send). */
  extraEntries?: unknown[];
  /** Rewrites the listing's entries (a hostile mirror). */
  rewriteListing?: (entries: Record<string, unknown>[]) => unknown[];
  /** Rewrites the repo info JSON (a hostile mirror). */
  info?: (info: Record<string, unknown>) => Record<string, unknown>;
  /** Error messages repeat the Authorization header back (a hostile mirror fishing for tokens). */
  echoAuthorization?: boolean;
}

export type Fault = { file: string; times?: number } & (
  | { kind: 'drop'; afterBytes: number }
  | { kind: 'stall'; afterBytes: number }
  | { kind: 'corrupt' }
  | { kind: 'inflate'; extraBytes: number; chunked?: boolean }
  | { kind: 'status'; status: number; code?: string }
  | { kind: 'ignoreRange' }
);

export interface LoggedRequest {
  method: string;
  server: 'hub' | 'cdn';
  /** Path and query as sent. */
  url: string;
  range?: string;
  authorized: boolean;
}

const LFS_EXTENSIONS = /\.(safetensors|model|npz|bin|msgpack|h5|pt|gguf)$/;

export function gitBlobId(data: Buffer): string {
  return crypto.createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

export function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function lfsPointer(data: Buffer): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(data)}\nsize ${data.length}\n`);
}

interface Repo extends ServedRepo {
  type: RepoKind;
  commit: string;
}

export class HubServer {
  readonly requests: LoggedRequest[] = [];
  readonly faults: Fault[] = [];
  /** Entries per listing page. */
  pageSize = 1000;
  url = '';
  cdnUrl = '';
  private readonly repos = new Map<string, Repo>();
  private readonly byHash = new Map<string, { repo: Repo; file: string }>();
  private readonly hub = http.createServer((req, res) => this.handle(req, res, 'hub'));
  private readonly cdn = http.createServer((req, res) => this.handle(req, res, 'cdn'));

  async start(): Promise<this> {
    for (const s of [this.hub, this.cdn]) await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
    this.cdnUrl = `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`;
    return this;
  }

  addRepo(r: ServedRepo): Repo {
    const names = Object.keys(r.files).sort();
    const commit =
      r.commit ??
      crypto
        .createHash('sha1')
        .update(names.map((n) => `${n}\0${sha256(r.files[n]!)}`).join('\n'))
        .digest('hex');
    const repo: Repo = { ...r, type: r.type ?? 'model', commit };
    this.repos.set(`${repo.type}:${r.id}`, repo);
    for (const [file, data] of Object.entries(r.files)) if (LFS_EXTENSIONS.test(file)) this.byHash.set(sha256(data), { repo, file });
    return repo;
  }

  /** The commit a served repo's main points to. */
  commitOf(id: string, type: RepoKind = 'model'): string {
    return this.repos.get(`${type}:${id}`)!.commit;
  }

  /** GETs of `file` from the hub (its resolve URL; an LFS file's bytes then come from the CDN). */
  fileRequests(file: string): LoggedRequest[] {
    return this.requests.filter((r) => r.method === 'GET' && r.server === 'hub' && r.url.split('?')[0]!.endsWith(`/resolve/${this.commitFor(r.url)}/${file}`));
  }

  private commitFor(url: string): string {
    return url.split('/resolve/')[1]?.split('/')[0] ?? '';
  }

  async close() {
    for (const s of [this.hub, this.cdn]) {
      s.closeAllConnections();
      await new Promise((resolve) => s.close(resolve));
    }
  }

  private takeFault(file: string): Fault | undefined {
    const i = this.faults.findIndex((f) => f.file === file);
    if (i < 0) return undefined;
    const f = this.faults[i]!;
    f.times = (f.times ?? 1) - 1;
    if (f.times <= 0) this.faults.splice(i, 1);
    return f;
  }

  private error(res: http.ServerResponse, status: number, code: string, message: string) {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...(code ? { 'x-error-code': code } : {}), 'x-error-message': message });
    res.end(JSON.stringify({ error: message }));
  }

  private json(res: http.ServerResponse, value: unknown, headers: Record<string, string> = {}) {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', ...headers });
    res.end(JSON.stringify(value));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, server: 'hub' | 'cdn') {
    const url = req.url ?? '/';
    this.requests.push({ method: req.method ?? 'GET', server, url, range: req.headers.range, authorized: req.headers.authorization !== undefined });
    if (server === 'cdn') {
      const hit = this.byHash.get(url.split('?')[0]!.split('/').pop() ?? '');
      if (!hit || !url.startsWith('/lfs/')) return this.error(res, 404, 'EntryNotFound', 'no such object');
      return this.sendFile(req, res, hit.file, hit.repo.files[hit.file]!, { etag: `"${sha256(hit.repo.files[hit.file]!)}"` });
    }
    const { pathname, searchParams } = new URL(url, this.url);
    const parts = pathname.split('/').slice(1);
    if (parts[0] === 'api') {
      const kind = ({ models: 'model', datasets: 'dataset', spaces: 'space' } as Record<string, RepoKind>)[parts[1] ?? ''];
      const repo = kind && this.repos.get(`${kind}:${parts[2]}/${parts[3]}`);
      if (!repo) return this.error(res, 401, 'RepoNotFound', 'Repository not found');
      const [what, revision = 'main', ...folder] = parts.slice(4).map(decodeURIComponent);
      if (what !== undefined && what !== 'revision' && what !== 'tree') return this.error(res, 404, '', 'Not found');
      if (!this.resolveRevision(repo, revision)) return this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
      if (what === 'tree') return this.tree(res, repo, folder.join('/'), searchParams);
      return this.info(res, repo);
    }
    // [datasets/|spaces/]org/name/resolve/rev/file
    const typed = parts[0] === 'datasets' || parts[0] === 'spaces';
    const kind: RepoKind = typed ? (parts[0] === 'datasets' ? 'dataset' : 'space') : 'model';
    const rest = typed ? parts.slice(1) : parts;
    const repo = this.repos.get(`${kind}:${rest[0]}/${rest[1]}`);
    if (!repo || rest[2] !== 'resolve') return this.error(res, 401, 'RepoNotFound', 'Repository not found');
    const revision = decodeURIComponent(rest[3] ?? '');
    const file = rest.slice(4).map(decodeURIComponent).join('/');
    const commit = this.resolveRevision(repo, revision);
    if (!commit) return this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
    if (repo.gated) {
      const auth = req.headers.authorization;
      const echo = repo.echoAuthorization && auth ? ` (you sent ${auth})` : '';
      if (!auth)
        return this.error(
          res,
          401,
          'GatedRepo',
          `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.${echo}`,
        );
      if (!repo.tokens?.includes(auth.replace(/^Bearer /, ''))) {
        return this.error(
          res,
          403,
          'GatedRepo',
          `Access to model ${repo.id} is restricted and you are not in the authorized list. Visit https://huggingface.co/${repo.id} to ask for access.${echo}`,
        );
      }
    }
    const data = repo.files[file];
    if (!data) return this.error(res, 404, 'EntryNotFound', `${file} does not exist on "${revision}"`);
    const common = { 'x-repo-commit': commit, 'access-control-expose-headers': 'X-Repo-Commit,X-Linked-Etag,X-Linked-Size,ETag' };
    if (LFS_EXTENSIONS.test(file)) {
      const location = `${this.cdnUrl}/lfs/${sha256(data)}?X-Amz-Signature=${crypto.randomBytes(8).toString('hex')}`;
      res.writeHead(302, {
        ...common,
        location,
        etag: `"${gitBlobId(lfsPointer(data))}"`,
        'x-linked-etag': `"${sha256(data)}"`,
        'x-linked-size': String(data.length),
        'content-type': 'text/plain; charset=utf-8',
      });
      return res.end(req.method === 'HEAD' ? undefined : `Found. Redirecting to ${location}`);
    }
    return this.sendFile(req, res, file, data, { ...common, etag: `"${gitBlobId(data)}"` });
  }

  private resolveRevision(repo: Repo, revision: string): string | null {
    return revision === 'main' || revision === 'HEAD' || revision === repo.commit || repo.revisions?.includes(revision) ? repo.commit : null;
  }

  private info(res: http.ServerResponse, repo: Repo) {
    const info: Record<string, unknown> = {
      _id: crypto.createHash('md5').update(repo.id).digest('hex').slice(0, 24),
      id: repo.id,
      sha: repo.commit,
      private: false,
      gated: repo.gated ? 'manual' : false,
      disabled: false,
      downloads: 0,
      likes: 0,
      lastModified: '2025-02-19T00:00:00.000Z',
      library_name: 'transformers',
      pipeline_tag: 'image-text-to-text',
      tags: [],
      siblings: Object.keys(repo.files).map((rfilename) => ({ rfilename })),
    };
    this.json(res, repo.info ? repo.info(info) : info);
  }

  private tree(res: http.ServerResponse, repo: Repo, folder: string, q: URLSearchParams) {
    const recursive = q.get('recursive') === 'true';
    const entries: unknown[] = [];
    const dirs = new Set<string>();
    for (const [file, data] of Object.entries(repo.files).sort(([a], [b]) => a.localeCompare(b))) {
      if (folder && !file.startsWith(`${folder}/`)) continue;
      const rel = folder ? file.slice(folder.length + 1) : file;
      if (!recursive && rel.includes('/')) {
        const dir = `${folder ? `${folder}/` : ''}${rel.split('/')[0]}`;
        if (!dirs.has(dir)) entries.push({ type: 'directory', oid: gitBlobId(Buffer.from(dir)), size: 0, path: dir });
        dirs.add(dir);
        continue;
      }
      entries.push(
        LFS_EXTENSIONS.test(file)
          ? {
              type: 'file',
              oid: gitBlobId(lfsPointer(data)),
              size: data.length,
              path: file,
              lfs: { oid: sha256(data), size: data.length, pointerSize: lfsPointer(data).length },
            }
          : { type: 'file', oid: gitBlobId(data), size: data.length, path: file },
      );
    }
    entries.push(...(repo.extraEntries ?? []));
    const listed = repo.rewriteListing ? repo.rewriteListing(entries as Record<string, unknown>[]) : entries;
    const cursor = Number(q.get('cursor') ?? 0);
    const page = listed.slice(cursor, cursor + this.pageSize);
    const next = new URL(`${this.url}/api/${repo.type}s/${repo.id}/tree/${repo.commit}${folder ? `/${folder}` : ''}`);
    next.searchParams.set('recursive', String(recursive));
    next.searchParams.set('expand', q.get('expand') ?? 'false');
    next.searchParams.set('cursor', String(cursor + this.pageSize));
    this.json(res, page, cursor + this.pageSize < listed.length ? { link: `<${next.href}>; rel="next"` } : {});
  }

  /** A file's bytes with Range support, through whatever fault is set for it. */
  private sendFile(req: http.IncomingMessage, res: http.ServerResponse, file: string, data: Buffer, headers: Record<string, string>) {
    const fault = req.method === 'GET' ? this.takeFault(file) : undefined;
    if (fault?.kind === 'status') return this.error(res, fault.status, fault.code ?? '', `HTTP ${fault.status}`);
    let body = data;
    if (fault?.kind === 'corrupt') {
      body = Buffer.from(data);
      body[body.length >> 1]! ^= 0xff;
    }
    if (fault?.kind === 'inflate') body = Buffer.concat([data, crypto.randomBytes(fault.extraBytes)]);
    const size = data.length;
    const m = fault?.kind === 'ignoreRange' ? null : /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let status = 200;
    const out: Record<string, string> = { ...headers, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
    if (m) {
      const start = Number(m[1]);
      const end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      if (start >= size) {
        res.writeHead(416, { ...out, 'content-range': `bytes */${size}` });
        return res.end();
      }
      status = 206;
      out['content-range'] = `bytes ${start}-${end}/${size}`;
      body = body.subarray(start, fault?.kind === 'inflate' ? body.length : end + 1);
    }
    if (!(fault?.kind === 'inflate' && fault.chunked)) out['content-length'] = String(body.length);
    res.writeHead(status, out);
    if (req.method === 'HEAD') return res.end();
    if (fault?.kind === 'drop' || fault?.kind === 'stall') {
      const cut = Math.min(fault.afterBytes, body.length);
      res.write(body.subarray(0, cut), () => {
        if (fault.kind === 'drop') setTimeout(() => res.socket?.destroy(), 20);
      });
      return; // a stall never ends: the client gives up or aborts
    }
    if (fault?.kind === 'inflate' && fault.chunked) {
      for (let i = 0; i < body.length; i += 65536) res.write(body.subarray(i, i + 65536));
      return res.end();
    }
    res.end(body);
  }
}

export async function startHubServer(repos: ServedRepo[] = []): Promise<HubServer> {
  const server = await new HubServer().start();
  for (const r of repos) server.addRepo(r);
  return server;
}
