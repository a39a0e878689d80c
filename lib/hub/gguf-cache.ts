/**
 * Our cache of converted pairs, one folder per repo, commit and types:
 *   <PALIGEMMA_CACHE>/gguf/models--org--name/<commit>/<type>-<visionType>[-seg-<hash>]/
 *       <name>-<type>.gguf  <name>-mmproj-<visionType>.gguf  pair.json
 * A pair is converted into a hidden folder beside it and renamed into place whole, so a folder
 * under its final name always holds a finished pair.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { ownerAlive } from './lock';
import { COMMIT_HASH, type RepoRef, repoFolderName } from './repo';

export interface CachedPair {
  /** `org/name` */
  repo: string;
  commit: string;
  /** The revision it was pulled as (a branch, tag or the commit). */
  revision: string;
  type: string;
  visionType: string;
  /** Where the mask decoder came from, if one is embedded. */
  segDecoder?: string;
  model: string;
  mmproj: string;
  /** The pair's folder and its size on disk. */
  dir: string;
  bytes: number;
  /** When it was last pulled or used (the newest one is what `--model org/name` takes). */
  usedAt: Date;
}

const META = 'pair.json';
const KEY = /^[a-z0-9_]+-[a-z0-9_]+(-seg-[0-9a-f]{12})?$/;

export function pairKey(type: string, visionType: string, segHash?: string): string {
  return `${type}-${visionType}${segHash ? `-seg-${segHash.slice(0, 12)}` : ''}`;
}

function root(ggufCache: string): string {
  return path.join(ggufCache, 'gguf');
}

export function commitDir(ggufCache: string, ref: RepoRef, commit: string): string {
  return path.join(root(ggufCache), repoFolderName(ref), commit);
}

/** The pair in `dir`, if it is a finished one (its metadata readable, both files there). */
export function readPair(dir: string): CachedPair | null {
  try {
    const metaFile = path.join(dir, META);
    const m = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as Record<string, unknown>;
    const file = (v: unknown) => (typeof v === 'string' && v === path.basename(v) && v.endsWith('.gguf') ? path.join(dir, v) : null);
    const model = file(m.model);
    const mmproj = file(m.mmproj);
    if (!model || !mmproj || typeof m.repo !== 'string' || typeof m.commit !== 'string') return null;
    const sizes = [model, mmproj].map((f) => fs.statSync(f).size);
    return {
      repo: m.repo,
      commit: m.commit,
      revision: typeof m.revision === 'string' ? m.revision : m.commit,
      type: String(m.type),
      visionType: String(m.visionType),
      ...(typeof m.segDecoder === 'string' ? { segDecoder: m.segDecoder } : {}),
      model,
      mmproj,
      dir,
      bytes: sizes[0]! + sizes[1]!,
      usedAt: fs.statSync(metaFile).mtime,
    };
  } catch {
    return null;
  }
}

const subdirs = (dir: string) => {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return [];
  }
};

/** Every finished pair, newest first. */
export function listPairs(ggufCache: string): CachedPair[] {
  const pairs: CachedPair[] = [];
  for (const repo of subdirs(root(ggufCache))) {
    for (const commit of subdirs(path.join(root(ggufCache), repo)).filter((c) => COMMIT_HASH.test(c))) {
      for (const key of subdirs(path.join(root(ggufCache), repo, commit)).filter((k) => KEY.test(k))) {
        const p = readPair(path.join(root(ggufCache), repo, commit, key));
        if (p) pairs.push(p);
      }
    }
  }
  return pairs.sort((a, b) => b.usedAt.getTime() - a.usedAt.getTime());
}

/** A short tag for a host, part of a conversion folder's name (a host name may hold anything). */
export function hostTag(host = os.hostname()): string {
  return crypto.createHash('sha256').update(host).digest('hex').slice(0, 8);
}

/** A conversion of another host untouched for this long is taken for dead (a shared disk: its pid says nothing here). */
export const FOREIGN_CONVERSION_STALE_MS = 3600_000;

/** The conversion folders this process is building now. */
const building = new Set<string>();

/** The newest modification time in a folder (a file being written moves its own mtime, not the folder's); 0 if it is gone. */
function lastModified(dir: string): number {
  try {
    let t = fs.statSync(dir).mtimeMs;
    for (const f of fs.readdirSync(dir)) t = Math.max(t, fs.statSync(path.join(dir, f), { throwIfNoEntry: false })?.mtimeMs ?? 0);
    return t;
  } catch {
    return 0;
  }
}

/** The owner a conversion folder's name records (its host as a tag, absent in names made before it was). */
function folderOwner(name: string): { pid: number; host?: string } | null {
  const m = /^\.partial-.*-(\d+)-([0-9a-f]{8})-\d+$/.exec(name) ?? /^\.partial-.*-(\d+)-\d+$/.exec(name);
  return m ? { pid: Number(m[1]), ...(m[2] ? { host: m[2] } : {}) } : null;
}

/**
 * Whether the conversion building in the hidden folder `dir` may still be going on: its process
 * alive on this host (our own pid only if this process builds it: a container restarted with the
 * dead one's pid is not it); made on another host, while it was modified within the last hour.
 * Folders named before the host was part of the name count as this host's.
 */
export function conversionAlive(dir: string): boolean {
  const owner = folderOwner(path.basename(dir));
  if (!owner) return false;
  return ownerAlive({
    pid: owner.pid,
    sameHost: owner.host === undefined || owner.host === hostTag(),
    ours: building.has(path.resolve(dir)),
    ageMs: Date.now() - lastModified(dir),
    foreignStaleMs: FOREIGN_CONVERSION_STALE_MS,
  });
}

/** Conversions that never finished (a killed process), or are still going on (`live`): hidden folders with their sizes. */
export function unfinished(ggufCache: string): { dir: string; bytes: number; live: boolean }[] {
  const out: { dir: string; bytes: number; live: boolean }[] = [];
  for (const repo of subdirs(root(ggufCache))) {
    for (const commit of subdirs(path.join(root(ggufCache), repo))) {
      for (const key of subdirs(path.join(root(ggufCache), repo, commit)).filter((k) => k.startsWith('.'))) {
        const dir = path.join(root(ggufCache), repo, commit, key);
        const bytes = fs.readdirSync(dir).reduce((s, f) => s + (fs.statSync(path.join(dir, f), { throwIfNoEntry: false })?.size ?? 0), 0);
        out.push({ dir, bytes, live: conversionAlive(dir) });
      }
    }
  }
  return out;
}

/** The pair for `ref` at `commit` that was pulled or used last, if any. */
export function newestPair(ggufCache: string, ref: RepoRef, commit: string): CachedPair | null {
  const dir = commitDir(ggufCache, ref, commit);
  const pairs = subdirs(dir)
    .filter((k) => KEY.test(k))
    .flatMap((k) => readPair(path.join(dir, k)) ?? []);
  return pairs.sort((a, b) => b.usedAt.getTime() - a.usedAt.getTime())[0] ?? null;
}

/** Marks a pair as just used. */
export async function touchPair(pair: CachedPair) {
  const now = new Date();
  await fs.promises.utimes(path.join(pair.dir, META), now, now).catch(() => undefined);
}

let made = 0;

/** Conversions left by a process that has died (see conversionAlive). */
function removeAbandoned(parent: string) {
  for (const name of subdirs(parent)) {
    if (!folderOwner(name)) continue;
    const dir = path.join(parent, name);
    if (!conversionAlive(dir)) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Builds a pair in a hidden folder with `build`, then renames the folder to `dir`. If another process
 * finished the same pair meanwhile, theirs is kept and returned.
 */
export async function storePair(
  dir: string,
  meta: Omit<CachedPair, 'model' | 'mmproj' | 'dir' | 'bytes' | 'usedAt'>,
  build: (tmp: string) => Promise<{ model: string; mmproj: string }>,
): Promise<CachedPair> {
  const parent = path.dirname(dir);
  await fs.promises.mkdir(parent, { recursive: true });
  removeAbandoned(parent);
  const tmp = path.join(parent, `.partial-${path.basename(dir)}-${process.pid}-${hostTag()}-${++made}`);
  building.add(path.resolve(tmp));
  try {
    return await buildAndStore(dir, tmp, meta, build);
  } finally {
    building.delete(path.resolve(tmp));
  }
}

async function buildAndStore(
  dir: string,
  tmp: string,
  meta: Omit<CachedPair, 'model' | 'mmproj' | 'dir' | 'bytes' | 'usedAt'>,
  build: (tmp: string) => Promise<{ model: string; mmproj: string }>,
): Promise<CachedPair> {
  await fs.promises.mkdir(tmp);
  try {
    const files = await build(tmp);
    const record = { ...meta, model: path.basename(files.model), mmproj: path.basename(files.mmproj), host: os.hostname() };
    await fs.promises.writeFile(path.join(tmp, META), `${JSON.stringify(record, null, 2)}\n`);
    try {
      await fs.promises.rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || !readPair(dir)) throw err;
    }
  } catch (err) {
    await fs.promises.rm(tmp, { recursive: true, force: true });
    if (err instanceof PaliGemmaError || (err as Error)?.name === 'AbortError') throw err;
    throw new PaliGemmaError('ERR_WRITE', `${dir}: cannot store the converted pair (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
      cause: err,
    });
  }
  await fs.promises.rm(tmp, { recursive: true, force: true });
  return readPair(dir)!;
}

/** Removes pairs (and folders left empty by that); returns the bytes freed. */
export async function removePairs(ggufCache: string, dirs: string[]): Promise<number> {
  let freed = 0;
  const top = root(ggufCache);
  for (const dir of dirs) {
    if (!path.resolve(dir).startsWith(path.resolve(top) + path.sep)) continue; // only ever inside our cache
    freed += fs.readdirSync(dir).reduce((s, f) => s + (fs.statSync(path.join(dir, f), { throwIfNoEntry: false })?.size ?? 0), 0);
    await fs.promises.rm(dir, { recursive: true, force: true });
    for (let d = path.dirname(dir); d.startsWith(top + path.sep); d = path.dirname(d)) {
      if (fs.readdirSync(d).length) break;
      await fs.promises.rmdir(d).catch(() => undefined);
    }
  }
  return freed;
}
