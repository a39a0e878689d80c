/**
 * What the hub says about a repo: the commit a revision points to, and the files at that commit.
 * @huggingface/hub builds the requests and pages through the listing; our fetch (listingFetch) adds
 * the token, retries and errors; everything it returns is checked here before it is used.
 */
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { hfHub } from './hf';
import { type HubClient, listingFetch } from './http';
import { blobName, unsafeNameReason } from './names';
import { COMMIT_HASH, describeRepo } from './repo';

export interface RepoFile {
  path: string;
  size: number;
  /** The blob name: the LFS SHA-256, or the git blob SHA-1 of a plain file. */
  etag: string;
  lfs: boolean;
}

/** The most entries a listing may have: a hostile server could page forever. */
const MAX_ENTRIES = 20_000;

function bad(client: HubClient, why: string): PaliGemmaError {
  return new PaliGemmaError('ERR_INVALID_FILE', `${describeRepo(client.repo)}: the hub's answer is not usable: ${why}`);
}

/** The commit `client.repo.revision` points to now. */
export async function fetchCommit(client: HubClient): Promise<string> {
  const { revision, name, type } = client.repo;
  if (COMMIT_HASH.test(revision)) return revision;
  const hub = hfHub();
  const params = {
    name,
    revision,
    hubUrl: client.endpoint,
    additionalFields: ['sha'] as ['sha'],
    fetch: listingFetch(client, `${describeRepo(client.repo, true)}: repo info`),
  };
  let info: { sha?: unknown };
  try {
    info = await (type === 'model' ? hub.modelInfo(params) : type === 'dataset' ? hub.datasetInfo(params) : hub.spaceInfo(params));
  } catch (err) {
    if (err instanceof PaliGemmaError) throw err;
    throw bad(client, `repo info (${(err as Error).name})`);
  }
  if (typeof info.sha !== 'string' || !COMMIT_HASH.test(info.sha)) throw bad(client, `no commit hash for ${JSON.stringify(revision)}`);
  return info.sha;
}

/**
 * The files directly in `folder` ('' for the top) at `commit`. Entries with unsafe names are left
 * out (they are never requested); an entry without a usable size or hash is an error.
 */
export async function listFolder(client: HubClient, commit: string, folder = ''): Promise<RepoFile[]> {
  const files = new Map<string, RepoFile>();
  let count = 0;
  const iter = hfHub().listFiles({
    repo: { type: client.repo.type, name: client.repo.name },
    revision: commit,
    path: folder || undefined,
    recursive: false,
    hubUrl: client.endpoint,
    fetch: listingFetch(client, `${describeRepo(client.repo)}: file listing`),
  });
  try {
    for await (const e of iter) {
      if (++count > MAX_ENTRIES) throw bad(client, `more than ${MAX_ENTRIES} entries in the listing`);
      if (e?.type !== 'file' || unsafeNameReason(e.path) !== null) continue;
      if (path.posix.dirname(e.path) !== (folder || '.')) continue;
      const lfs = e.lfs !== undefined && e.lfs !== null;
      const size = e.size;
      const etag = blobName(lfs ? e.lfs?.oid : e.oid);
      if (!Number.isSafeInteger(size) || size < 0) throw bad(client, `${JSON.stringify(e.path)} has no valid size`);
      if (lfs && e.lfs?.size !== size) throw bad(client, `${JSON.stringify(e.path)}: its size ${size} and LFS size ${e.lfs?.size} differ`);
      if (!etag || (lfs && etag.length !== 64) || (!lfs && etag.length !== 40))
        throw bad(client, `${JSON.stringify(e.path)} has no valid ${lfs ? 'LFS SHA-256' : 'git object id'}`);
      if (files.has(e.path)) throw bad(client, `${JSON.stringify(e.path)} is listed twice`);
      files.set(e.path, { path: e.path, size, etag, lfs });
    }
  } catch (err) {
    if (err instanceof PaliGemmaError) throw err;
    throw bad(client, `file listing (${(err as Error).name})`);
  }
  return [...files.values()];
}
