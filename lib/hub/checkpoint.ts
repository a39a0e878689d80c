/**
 * A PaliGemma checkpoint from the hub into the Hugging Face cache: only the files the converter reads
 * (config, tokenizer, preprocessor config, safetensors weights or their shards + index; never the
 * *.bin / *.msgpack / *.h5 duplicates), each blob verified, the snapshot linked only once its blob is
 * whole, so an interrupted pull leaves a partial blob to resume and no broken link.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { checkFreeSpace, type DiskNeed } from './disk';
import { downloadBlob } from './download';
import { blobPath, linkSnapshotFile, repoDir, snapshotDir, snapshotFile, writeRef } from './hf-cache';
import { type HubClient, sleep } from './http';
import { listFolder, type RepoFile } from './listing';
import { withLock } from './lock';
import { unsafeNameReason } from './names';
import { describeRepo, type RepoRef, repoUrlPath } from './repo';

export interface DownloadProgress {
  phase: 'download';
  /** The file being downloaded. */
  file: string;
  /** Bytes of this pull's downloads on disk so far, and in all (files already cached not counted). */
  bytesDone: number;
  bytesTotal: number;
  fraction: number;
  /**
   * Set (once) when another process is downloading this file: what this pull waits for, e.g.
   * `process 123 on host-a (lock <path>)`. The download goes on when that one ends or is found dead.
   */
  waitingFor?: string;
}

/** Small files the converter reads, or that Transformers users expect beside them. */
const METADATA_FILES = [
  'config.json',
  'preprocessor_config.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'generation_config.json',
];
const INDEX = 'model.safetensors.index.json';

function notCheckpoint(ref: RepoRef, why: string): PaliGemmaError {
  return new PaliGemmaError('ERR_INVALID_FILE', `${describeRepo(ref)}: not a Transformers PaliGemma checkpoint: ${why}`);
}

/** The shards an index names: plain file names of the same folder, each once. */
function shardsOf(indexFile: string, ref: RepoRef): string[] {
  let map: unknown;
  try {
    map = (JSON.parse(fs.readFileSync(indexFile, 'utf8')) as { weight_map?: unknown }).weight_map;
  } catch {
    throw notCheckpoint(ref, `${INDEX} is not valid JSON`);
  }
  if (!map || typeof map !== 'object') throw notCheckpoint(ref, `${INDEX} has no weight_map`);
  const names = [...new Set(Object.values(map as Record<string, unknown>))];
  for (const n of names) {
    if (typeof n !== 'string' || unsafeNameReason(n) !== null || n.includes('/') || !n.endsWith('.safetensors')) {
      throw new PaliGemmaError(
        'ERR_INVALID_FILE',
        `${describeRepo(ref)}: ${INDEX} names the shard ${JSON.stringify(n)}, not a .safetensors file of the repo's top folder: refused`,
      );
    }
  }
  return names as string[];
}

/** Which files of the listing make the checkpoint (the shards come later, from the index). */
function selectFiles(listing: RepoFile[], ref: RepoRef): { files: RepoFile[]; index?: RepoFile } {
  const byName = new Map(listing.map((f) => [f.path, f]));
  if (!byName.has('config.json')) throw notCheckpoint(ref, 'no config.json');
  const files = METADATA_FILES.flatMap((n) => (byName.has(n) ? [byName.get(n)!] : []));
  const tokenizer = byName.get('tokenizer.model') ?? byName.get('tokenizer.json');
  if (!tokenizer) throw notCheckpoint(ref, 'no tokenizer.model or tokenizer.json');
  files.push(tokenizer);
  const index = byName.get(INDEX);
  if (index) return { files, index };
  const single = byName.get('model.safetensors');
  if (!single) {
    const other = listing.find((f) => /\.(bin|msgpack|h5|pt|pth|ckpt)$/.test(f.path));
    throw notCheckpoint(ref, `no model.safetensors or ${INDEX}${other ? ` (only ${other.path} and the like: safetensors weights are needed)` : ''}`);
  }
  files.push(single);
  return { files };
}

/** A complete checkpoint already in the cache for `commit`, from this package or from Python; null if any file is missing. */
export function cachedCheckpoint(hubCache: string, ref: RepoRef, commit: string): string | null {
  const has = (f: string) => snapshotFile(hubCache, ref, commit, f) !== null;
  if (!has('config.json') || !(has('tokenizer.model') || has('tokenizer.json'))) return null;
  const index = snapshotFile(hubCache, ref, commit, INDEX);
  if (index) {
    try {
      if (!shardsOf(index, ref).every(has)) return null;
    } catch {
      return null;
    }
  } else if (!has('model.safetensors')) return null;
  return snapshotDir(hubCache, ref, commit);
}

export interface FetchOptions {
  hubCache: string;
  /** Disk space the caller will need afterwards (the conversion), checked together with the download's. */
  extraDisk?: (checkpointBytes: number) => DiskNeed[];
  onProgress?: (p: DownloadProgress) => void;
}

function resolveUrl(client: HubClient, commit: string, file: string): string {
  return `${client.endpoint}/${repoUrlPath(client.repo)}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

/**
 * Makes `files` (from the listing at `commit`) present in the snapshot: blobs already cached are
 * only linked, the others downloaded one at a time under a lock. Returns the bytes downloaded.
 */
export async function fetchFiles(client: HubClient, commit: string, files: RepoFile[], o: FetchOptions, extra: DiskNeed[] = []): Promise<number> {
  const ref = client.repo;
  const wanted = files.map((f) => ({ f, blob: blobPath(o.hubCache, ref, f.etag) }));
  const isWhole = (blob: string, size: number) => fs.statSync(blob, { throwIfNoEntry: false })?.size === size;
  const missing = wanted.filter((w) => !isWhole(w.blob, w.f.size));
  const partialBytes = (blob: string) => fs.statSync(`${blob}.incomplete`, { throwIfNoEntry: false })?.size ?? 0;
  const toFetch = missing.reduce((s, w) => s + w.f.size, 0);
  await checkFreeSpace([
    {
      dir: repoDir(o.hubCache, ref),
      bytes: missing.reduce((s, w) => s + Math.max(0, w.f.size - partialBytes(w.blob)), 0),
      what: `the download of ${describeRepo(ref)}`,
    },
    ...extra,
  ]);
  let done = 0;
  for (const { f, blob } of missing) {
    await fs.promises.mkdir(path.dirname(blob), { recursive: true });
    const lock = path.join(o.hubCache, '.locks', path.basename(repoDir(o.hubCache, ref)), `${f.etag}.paligemma.lock`);
    const progress = (have: number, waitingFor?: string) =>
      o.onProgress?.({
        phase: 'download',
        file: f.path,
        bytesDone: done + have,
        bytesTotal: toFetch,
        fraction: toFetch ? (done + have) / toFetch : 1,
        ...(waitingFor ? { waitingFor } : {}),
      });
    await withLock(
      lock,
      (ms) => sleep(ms, client),
      async () => {
        if (isWhole(blob, f.size)) return; // another process fetched it while we waited
        // A blob of the wrong size (a damaged cache) is fetched again.
        await fs.promises.rm(blob, { force: true });
        await downloadBlob(client, { file: f.path, url: resolveUrl(client, commit, f.path), commit, blob, size: f.size, etag: f.etag }, (have) =>
          progress(have),
        );
      },
      { onWait: (owner) => progress(0, `another download of ${f.path}: ${owner}`) },
    );
    done += f.size;
  }
  for (const { f } of wanted) await linkSnapshotFile(o.hubCache, ref, commit, f.path, f.etag);
  return toFetch;
}

/** The checkpoint at `commit` in the cache, downloading what it lacks. Returns its snapshot folder and the bytes downloaded. */
export async function fetchCheckpoint(client: HubClient, commit: string, o: FetchOptions): Promise<{ dir: string; downloaded: number }> {
  const ref = client.repo;
  const listing = await listFolder(client, commit);
  const { files, index } = selectFiles(listing, ref);
  let downloaded = 0;
  if (index) {
    downloaded += await fetchFiles(client, commit, [index], o);
    const byName = new Map(listing.map((f) => [f.path, f]));
    for (const shard of shardsOf(snapshotFile(o.hubCache, ref, commit, INDEX)!, ref)) {
      const f = byName.get(shard);
      if (!f) throw notCheckpoint(ref, `${INDEX} names ${shard}, which the repo's listing lacks`);
      files.push(f);
    }
  }
  const weights = files.filter((f) => f.path.endsWith('.safetensors')).reduce((s, f) => s + f.size, 0);
  downloaded += await fetchFiles(client, commit, files, o, o.extraDisk?.(weights) ?? []);
  await writeRef(o.hubCache, ref, commit);
  return { dir: snapshotDir(o.hubCache, ref, commit), downloaded };
}

/** One file of a repo (a mask decoder, say) at `commit`, from the cache or the hub. */
export async function fetchRepoFile(client: HubClient, commit: string, file: string, o: FetchOptions): Promise<string> {
  const cached = snapshotFile(o.hubCache, client.repo, commit, file);
  if (cached) return cached;
  const entry = (await listFolder(client, commit, path.posix.dirname(file) === '.' ? '' : path.posix.dirname(file))).find((f) => f.path === file);
  if (!entry) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${describeRepo(client.repo)}: no file ${JSON.stringify(file)} at ${commit.slice(0, 12)}`);
  await fetchFiles(client, commit, [entry], o);
  await writeRef(o.hubCache, client.repo, commit);
  return snapshotFile(o.hubCache, client.repo, commit, file)!;
}
