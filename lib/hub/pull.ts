/**
 * pull(): a PaliGemma repo on the hub -> a converted GGUF pair, fetching and converting only what is
 * not cached yet. The checkpoint goes to the Hugging Face cache (shared with Python), the pair to ours.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { type ConvertProgress, convert, TEXT_TYPES, type TextType, VISION_TYPES, type VisionType } from '../convert/index';
import { Checkpoint } from '../convert/safetensors';
import { invalidArgument, PaliGemmaError } from '../errors';
import * as v from '../validate';
import { cachedCheckpoint, type DownloadProgress, fetchCheckpoint, fetchRepoFile } from './checkpoint';
import { checkFreeSpace } from './disk';
import { commitDir, newestPair, pairKey, readPair, storePair, touchPair } from './gguf-cache';
import { readRef, snapshotFile, writeRef } from './hf-cache';
import type { HubClient } from './http';
import { fetchCommit } from './listing';
import { conversionBytes } from './models';
import { COMMIT_HASH, DEFAULT_REVISION, describeRepo, parseHubFile, parseRepo, type RepoRef } from './repo';
import { type HubSettings, hubSettings } from './settings';

export const DEFAULT_TEXT_TYPE: TextType = 'q4_k_m';
export const DEFAULT_VISION_TYPE: VisionType = 'q8_0';

/** Downloading ('download'), then converting (the converter's phases, 'done' at the end). */
export type PullProgress = DownloadProgress | ConvertProgress;

export interface PullOptions {
  /** `org/name`, `org/name@revision` or `hf://org/name[@revision]`. */
  repo: string;
  /** A branch, tag or commit (default: the one in `repo`, else 'main'). */
  revision?: string;
  /** Text type (default 'q4_k_m'). */
  type?: TextType;
  /** Vision type (default 'q8_0'). */
  visionType?: VisionType;
  /**
   * big_vision's mask decoder (vae-oid.npz) to embed, for segment(): a local file, or a file in a
   * hub repo as `hf://[datasets/|spaces/]org/name[@revision]/path/vae-oid.npz`.
   */
  segDecoder?: string;
  /** Conversion threads (default: all CPUs). */
  threads?: number;
  /** Default: HF_TOKEN, else the token file huggingface_hub's login writes. */
  token?: string;
  /** Default: HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Use only the cache (default: HF_HUB_OFFLINE). */
  offline?: boolean;
  onProgress?: (p: PullProgress) => void;
  signal?: AbortSignal;
}

export interface PullResult {
  model: string;
  mmproj: string;
  /** `org/name` */
  repo: string;
  revision: string;
  commit: string;
  type: string;
  visionType: string;
  /** The checkpoint's snapshot folder in the Hugging Face cache (when this pull needed it). */
  checkpoint?: string;
  /** Bytes this pull downloaded (0 when everything was cached). */
  downloadedBytes: number;
  /** Whether this pull converted the pair (false: it was in the cache). */
  converted: boolean;
}

interface Resolved {
  ref: RepoRef;
  settings: HubSettings;
  client: HubClient;
}

const PULL_KEYS = ['repo', 'revision', 'type', 'visionType', 'segDecoder', 'threads', 'token', 'endpoint', 'offline', 'onProgress', 'signal'];

function validate(o: PullOptions) {
  if (!v.isPlainObject(o)) throw invalidArgument('pull(options)', 'an object', o);
  for (const k of Object.keys(o))
    if (!PULL_KEYS.includes(k)) throw invalidArgument(`pull options.${k}`, `one of ${PULL_KEYS.join(', ')}`, `unknown option '${k}'`);
  if (typeof o.repo !== 'string' || !o.repo) throw invalidArgument('pull options.repo', 'a hub repo id, org/name', o.repo);
  v.optionalString('pull options.revision', o.revision);
  v.optionalEnum('pull options.type', o.type, TEXT_TYPES);
  v.optionalEnum('pull options.visionType', o.visionType, VISION_TYPES);
  v.optionalString('pull options.segDecoder', o.segDecoder);
  v.optionalInteger('pull options.threads', o.threads, 1, 1024);
  v.optionalString('pull options.token', o.token);
  v.optionalString('pull options.endpoint', o.endpoint);
  if (o.offline !== undefined && typeof o.offline !== 'boolean') throw invalidArgument('pull options.offline', 'a boolean', o.offline);
  v.optionalFunction('pull options.onProgress', o.onProgress);
  v.optionalSignal('pull options.signal', o.signal);
}

function setup(o: PullOptions): Resolved {
  const ref = parseRepo(o.repo);
  if (o.revision !== undefined) {
    if (ref.revision !== DEFAULT_REVISION && ref.revision !== o.revision) {
      throw invalidArgument('pull options.revision', `the revision in options.repo (${ref.revision}) or none`, o.revision);
    }
    ref.revision = parseRepo(`${ref.name}@${o.revision}`).revision;
  }
  const settings = hubSettings({ endpoint: o.endpoint, token: o.token, offline: o.offline });
  return { ref, settings, client: { endpoint: settings.endpoint, token: settings.token, signal: o.signal, repo: ref } };
}

function offlineMissing(s: HubSettings, ref: RepoRef, what: string): PaliGemmaError {
  return new PaliGemmaError(
    'ERR_FILE_NOT_FOUND',
    `HF_HUB_OFFLINE is set and ${what} of ${describeRepo(ref, true)} is not in the cache (${s.hubCache}): pull it once with a connection (\`paligemma pull ${describeRepo(ref)}\`), or unset HF_HUB_OFFLINE`,
  );
}

/**
 * The commit to use: a commit hash as given; offline, the cached ref; `preferCache`, the cached ref
 * without asking; else the hub's answer (the cached ref if the hub cannot be reached).
 */
async function resolveCommit({ ref, settings, client }: Resolved, preferCache: boolean): Promise<string> {
  if (COMMIT_HASH.test(ref.revision)) return ref.revision;
  const cached = readRef(settings.hubCache, ref);
  if (settings.offline) {
    if (cached) return cached;
    throw offlineMissing(settings, ref, `the revision ${JSON.stringify(ref.revision)}`);
  }
  if (preferCache && cached) return cached;
  try {
    return await fetchCommit(client);
  } catch (err) {
    // As huggingface_hub does: with the hub out of reach, what the cache has.
    if (cached && err instanceof PaliGemmaError && err.code === 'ERR_NETWORK') return cached;
    throw err;
  }
}

async function sha256File(file: string): Promise<string> {
  const h = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The mask decoder as a local file, its content hash (part of the pair's key), and where it came from. */
async function resolveSegDecoder(spec: string, base: Resolved, o: PullOptions, preferCache: boolean): Promise<{ file: string; hash: string; source: string }> {
  if (!spec.startsWith('hf://')) {
    const file = path.resolve(spec);
    if (!fs.existsSync(file) || !fs.statSync(file).isFile()) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `segDecoder ${spec}: no such file`);
    return { file, hash: await sha256File(file), source: file };
  }
  const { path: inRepo, ...ref } = parseHubFile(spec);
  const r: Resolved = { ref, settings: base.settings, client: { ...base.client, repo: ref } };
  const commit = await resolveCommit(r, preferCache);
  let file = snapshotFile(r.settings.hubCache, ref, commit, inRepo);
  if (!file) {
    if (r.settings.offline) throw offlineMissing(r.settings, ref, inRepo);
    file = await fetchRepoFile(r.client, commit, inRepo, { hubCache: r.settings.hubCache, onProgress: o.onProgress });
  }
  return { file, hash: await sha256File(file), source: `hf://${describeRepo(ref, false)}@${commit}/${inRepo}` };
}

/** Parameters in a checkpoint (from the safetensors headers), for the conversion's disk check. */
async function checkpointWeightBytes(dir: string): Promise<number> {
  const ckpt = await Checkpoint.open(dir);
  try {
    return ckpt.names().reduce((s, n) => s + ckpt.get(n)!.byteLength, 0);
  } finally {
    await ckpt.close();
  }
}

const converting = new Map<string, Promise<unknown>>();

async function pullWith(o: PullOptions, preferCache: boolean): Promise<PullResult> {
  validate(o);
  const r = setup(o);
  const { ref, settings, client } = r;
  const commit = await resolveCommit(r, preferCache);
  const type = o.type ?? DEFAULT_TEXT_TYPE;
  const visionType = o.visionType ?? DEFAULT_VISION_TYPE;
  const seg = o.segDecoder ? await resolveSegDecoder(o.segDecoder, r, o, preferCache) : null;
  const dir = path.join(commitDir(settings.ggufCache, ref, commit), pairKey(type, visionType, seg?.hash));
  const result = (pair: { model: string; mmproj: string }, rest: Partial<PullResult>): PullResult => ({
    model: pair.model,
    mmproj: pair.mmproj,
    repo: ref.name,
    revision: ref.revision,
    commit,
    type,
    visionType,
    downloadedBytes: 0,
    converted: false,
    ...rest,
  });

  const cachedPair = readPair(dir);
  if (cachedPair) {
    await touchPair(cachedPair);
    if (!COMMIT_HASH.test(ref.revision) && !settings.offline) await writeRef(settings.hubCache, ref, commit);
    return result(cachedPair, {});
  }
  const inFlight = converting.get(dir);
  if (inFlight) {
    await inFlight.catch(() => undefined);
    const done = readPair(dir);
    if (done) return result(done, {});
  }
  const work = (async () => {
    let checkpoint = cachedCheckpoint(settings.hubCache, ref, commit);
    let downloadedBytes = 0;
    if (!checkpoint) {
      if (settings.offline) throw offlineMissing(settings, ref, `the checkpoint at ${commit.slice(0, 12)}`);
      const fetched = await fetchCheckpoint(client, commit, {
        hubCache: settings.hubCache,
        onProgress: o.onProgress,
        extraDisk: (weights) => [{ dir: settings.ggufCache, bytes: conversionBytes(weights, type, visionType), what: 'the conversion' }],
      });
      checkpoint = fetched.dir;
      downloadedBytes = fetched.downloaded;
    } else if (!COMMIT_HASH.test(ref.revision) && !settings.offline) {
      await writeRef(settings.hubCache, ref, commit);
    }
    const weights = await checkpointWeightBytes(checkpoint);
    await checkFreeSpace([{ dir: settings.ggufCache, bytes: conversionBytes(weights, type, visionType), what: `converting to ${type} + ${visionType}` }]);
    const pair = await storePair(
      dir,
      { repo: ref.name, commit, revision: ref.revision, type, visionType, ...(seg ? { segDecoder: seg.source } : {}) },
      (outDir) =>
        convert({
          input: checkpoint!,
          outDir,
          type,
          visionType,
          segDecoder: seg?.file,
          name: ref.name.split('/')[1]!,
          threads: o.threads,
          signal: o.signal,
          onProgress: o.onProgress,
        }),
    );
    return result(pair, { checkpoint, downloadedBytes, converted: true });
  })();
  converting.set(dir, work);
  try {
    return await work;
  } finally {
    converting.delete(dir);
  }
}

/**
 * Downloads a PaliGemma checkpoint from the hub (or finds it in the Hugging Face cache) and converts
 * it to a GGUF pair (or finds that in paligemma's cache). Always asks the hub which commit the
 * revision is now (offline or unreachable: what the cache has).
 */
export function pull(options: PullOptions): Promise<PullResult> {
  return pullWith(options, false);
}

/**
 * The pair a model option naming a hub repo stands for, asking the hub nothing when the cache can
 * answer: the revision's cached commit, and its pair pulled or used last (any types) unless types
 * are given; otherwise it pulls with `options` (the default types when none are given).
 */
export async function resolveHubModel(spec: string, options: Omit<PullOptions, 'repo'> = {}): Promise<PullResult> {
  const o = { ...options, repo: spec };
  validate(o);
  const r = setup(o);
  if (o.type === undefined && o.visionType === undefined && o.segDecoder === undefined) {
    const commit = COMMIT_HASH.test(r.ref.revision) ? r.ref.revision : readRef(r.settings.hubCache, r.ref);
    const pair = commit ? newestPair(r.settings.ggufCache, r.ref, commit) : null;
    if (pair && commit) {
      await touchPair(pair);
      return {
        model: pair.model,
        mmproj: pair.mmproj,
        repo: r.ref.name,
        revision: r.ref.revision,
        commit,
        type: pair.type,
        visionType: pair.visionType,
        downloadedBytes: 0,
        converted: false,
      };
    }
  }
  return pullWith(o, true);
}
