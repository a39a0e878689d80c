/**
 * Where the hub is and where things go, from the same environment variables huggingface_hub reads
 * (so Python and this package share one cache and one login), plus PALIGEMMA_CACHE for our GGUFs.
 * Read at each call, not at load: a program (or a test) may change them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { hfHub } from './hf';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

export interface HubSettings {
  /** The hub's base URL, without a trailing slash. */
  endpoint: string;
  /** The Hugging Face cache (`models--org--name/{blobs,snapshots,refs}`). */
  hubCache: string;
  /** Our cache of converted GGUF pairs. */
  ggufCache: string;
  token?: string;
  offline: boolean;
}

export interface HubOverrides {
  endpoint?: string;
  token?: string;
  offline?: boolean;
}

const env = (name: string) => (process.env[name] ? process.env[name] : undefined);
const expandHome = (p: string) => (p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p);

function cacheHome(): string {
  return expandHome(env('XDG_CACHE_HOME') ?? path.join(os.homedir(), '.cache'));
}

/** `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`. */
export function hfHome(): string {
  return expandHome(env('HF_HOME') ?? path.join(cacheHome(), 'huggingface'));
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'on', 'yes', 'true'].includes(v.trim().toLowerCase());
}

/** HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), else the file `hf auth login` writes. */
export function readToken(): string | undefined {
  const fromEnv = env('HF_TOKEN') ?? env('HUGGING_FACE_HUB_TOKEN');
  if (fromEnv?.trim()) return fromEnv.trim();
  const file = expandHome(env('HF_TOKEN_PATH') ?? path.join(hfHome(), 'token'));
  try {
    return fs.readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function checkEndpoint(url: string, from: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `${from}: ${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `${from}: ${JSON.stringify(url)} is not an http(s) URL`);
  }
  if (parsed.username || parsed.password) throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `${from}: put credentials in HF_TOKEN, not in the URL`);
  return url.replace(/\/+$/, '');
}

export function hubSettings(o: HubOverrides = {}): HubSettings {
  const endpoint = o.endpoint !== undefined ? checkEndpoint(o.endpoint, 'endpoint') : checkEndpoint(env('HF_ENDPOINT') ?? DEFAULT_ENDPOINT, 'HF_ENDPOINT');
  return {
    endpoint,
    // @huggingface/hub resolves HF_HUB_CACHE / HUGGINGFACE_HUB_CACHE / HF_HOME / XDG_CACHE_HOME as Python does.
    hubCache: path.resolve(expandHome(hfHub().getHFHubCachePath())),
    ggufCache: path.resolve(expandHome(env('PALIGEMMA_CACHE') ?? path.join(cacheHome(), 'paligemma'))),
    token: o.token !== undefined ? o.token || undefined : readToken(),
    offline: o.offline ?? truthy(env('HF_HUB_OFFLINE')),
  };
}
