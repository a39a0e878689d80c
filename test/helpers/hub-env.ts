/**
 * What the hub tests share: the tiny checkpoints as hub repos, and an environment (HF_HOME,
 * PALIGEMMA_CACHE, HF_ENDPOINT) of fresh temporary folders pointing at a loopback hub.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES } from './fixtures';
import { gitBlobId, type HubServer, sha256 } from './hub-server';
import { tmpDir } from './tmp';

/** A fixture checkpoint's files (not its reference outputs), as a repo on the hub holds them. */
export function checkpointFiles(fixture: 'tiny-v1' | 'tiny-v2'): Record<string, Buffer> {
  const dir = path.join(FIXTURES, fixture);
  const files: Record<string, Buffer> = {};
  for (const f of fs.readdirSync(dir)) if (fs.statSync(path.join(dir, f)).isFile()) files[f] = fs.readFileSync(path.join(dir, f));
  return files;
}

/** Files a real repo also has, which a pull must not fetch. */
export const UNNEEDED_FILES: Record<string, Buffer> = {
  'pytorch_model.bin': Buffer.alloc(4096, 1),
  'flax_model.msgpack': Buffer.alloc(4096, 2),
  'tf_model.h5': Buffer.alloc(4096, 3),
  'README.md': Buffer.from('# tiny\n'),
  '.gitattributes': Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n'),
  'jax/params.npz': Buffer.alloc(1024, 4),
};

/** The files of a pull: what the converter reads, plus the small configs beside them. */
export const NEEDED = ['config.json', 'preprocessor_config.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'model.safetensors'];

/** The blob name huggingface_hub gives a file: its LFS SHA-256, or its git blob id. */
export function etagOf(file: string, data: Buffer): string {
  return /\.(safetensors|model|npz)$/.test(file) ? sha256(data) : gitBlobId(data);
}

const KEYS = [
  'HF_HOME',
  'HF_HUB_CACHE',
  'HUGGINGFACE_HUB_CACHE',
  'HF_ENDPOINT',
  'HF_TOKEN',
  'HUGGING_FACE_HUB_TOKEN',
  'HF_TOKEN_PATH',
  'HF_HUB_OFFLINE',
  'PALIGEMMA_CACHE',
  'XDG_CACHE_HOME',
];

export interface HubEnv {
  /** The Hugging Face cache ($HF_HOME/hub) and ours. */
  hubCache: string;
  ggufCache: string;
  hfHome: string;
  root: string;
}

/** Points every hub variable at fresh folders and `server` until the test ends. */
export function hubEnv(t: { teardown(fn: () => void): void }, server: HubServer | { url: string }, extra: Record<string, string> = {}): HubEnv {
  const saved = KEYS.map((k) => [k, process.env[k]] as const);
  const root = tmpDir('pg-hub-');
  for (const k of KEYS) delete process.env[k];
  const env = { hfHome: path.join(root, 'hf'), hubCache: path.join(root, 'hf', 'hub'), ggufCache: path.join(root, 'paligemma'), root };
  Object.assign(process.env, { HF_HOME: env.hfHome, PALIGEMMA_CACHE: env.ggufCache, HF_ENDPOINT: server.url }, extra);
  t.teardown(() => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  return env;
}

/** Writes `files` into a cache the way huggingface_hub does (blobs, relative links, refs/main). */
export function writePythonCache(hubCache: string, repo: string, commit: string, files: Record<string, Buffer>) {
  const dir = path.join(hubCache, `models--${repo.replace('/', '--')}`);
  fs.mkdirSync(path.join(dir, 'blobs'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'refs'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'refs', 'main'), commit);
  for (const [name, data] of Object.entries(files)) {
    const etag = etagOf(name, data);
    fs.writeFileSync(path.join(dir, 'blobs', etag), data);
    const link = path.join(dir, 'snapshots', commit, name);
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync(path.relative(path.dirname(link), path.join(dir, 'blobs', etag)), link);
  }
  return dir;
}
