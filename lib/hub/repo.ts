/**
 * Hub repository references, checked before any URL or cache path is built from them:
 *  - `org/name[@revision]`: a model repo (where a model path is expected, only when no such file or
 *    folder exists: a path always wins);
 *  - `hf://[datasets/|spaces/]org/name[@revision][/path/in/repo]`: the explicit form, always the hub.
 */
import fs from 'node:fs';
import { PaliGemmaError } from '../errors';

export type RepoType = 'model' | 'dataset' | 'space';

export interface RepoRef {
  type: RepoType;
  /** `org/name` */
  name: string;
  /** A branch, tag or commit hash. */
  revision: string;
}

export const DEFAULT_REVISION = 'main';
export const COMMIT_HASH = /^[0-9a-f]{40}$/;

// The hub's own rules: letters, digits, '-', '_', '.'; '--' and '..' are refused (the cache uses '--'
// as its separator, so a name holding it could not be told apart from another repo's folder).
const NAME_PART = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}$/;
const REVISION = /^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}$/;
const TYPE_PREFIX: Record<string, RepoType> = { models: 'model', datasets: 'dataset', spaces: 'space' };

function invalid(spec: string, what: string): PaliGemmaError {
  return new PaliGemmaError('ERR_INVALID_ARGUMENT', `${JSON.stringify(spec)}: ${what}`);
}

function checkName(spec: string, name: string) {
  const parts = name.split('/');
  if (parts.length !== 2 || !parts.every((p) => NAME_PART.test(p) && !p.includes('--') && !p.includes('..') && !/[.-]$/.test(p))) {
    throw invalid(spec, 'not a hub repo id (expected org/name: letters, digits, "-", "_", ".")');
  }
}

function checkRevision(spec: string, revision: string) {
  if (!REVISION.test(revision) || revision.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw invalid(spec, `${JSON.stringify(revision)} is not a branch, tag or commit name`);
  }
}

/** `[type/]org/name[@rev]` with no path after it. */
function parseRepoPart(spec: string, body: string): RepoRef {
  const at = body.indexOf('@');
  let name = at < 0 ? body : body.slice(0, at);
  const revision = at < 0 ? DEFAULT_REVISION : body.slice(at + 1);
  let type: RepoType = 'model';
  const first = name.split('/')[0]!;
  if (name.split('/').length === 3 && TYPE_PREFIX[first]) {
    type = TYPE_PREFIX[first]!;
    name = name.slice(first.length + 1);
  }
  checkName(spec, name);
  checkRevision(spec, revision);
  return { type, name, revision };
}

/** A repo to pull: `org/name[@revision]` or `hf://...` (no path inside the repo). */
export function parseRepo(spec: string): RepoRef {
  if (typeof spec !== 'string' || !spec) throw invalid(String(spec), 'expected a hub repo id, org/name[@revision]');
  return parseRepoPart(spec, spec.startsWith('hf://') ? spec.slice(5) : spec);
}

/**
 * A file in a repo, `hf://[datasets/|spaces/]org/name[@revision]/path/to/file`. A revision holding
 * '/' is written URL-encoded there (`@refs%2Fpr%2F1`), as the hub's own file-system URLs do.
 */
export function parseHubFile(spec: string): RepoRef & { path: string } {
  if (!spec.startsWith('hf://')) throw invalid(spec, 'expected hf://org/name[@revision]/path/to/file');
  const parts = spec.slice(5).split('/');
  const typed = TYPE_PREFIX[parts[0]!] !== undefined && parts.length > 3;
  const repoParts = parts.slice(0, typed ? 3 : 2);
  const filePath = parts.slice(repoParts.length).join('/');
  if (!filePath) throw invalid(spec, 'no file named after the repo (hf://org/name/path/to/file)');
  let repo = repoParts.join('/');
  const at = repo.indexOf('@');
  if (at >= 0) {
    let revision: string;
    try {
      revision = decodeURIComponent(repo.slice(at + 1));
    } catch {
      throw invalid(spec, 'the revision is not valid URL encoding');
    }
    repo = `${repo.slice(0, at)}@${revision}`;
  }
  return { ...parseRepoPart(spec, repo), path: filePath };
}

/**
 * The repo a model option names, or null when it is a path: an existing file or folder always wins;
 * `hf://` always means the hub; `org/name[@rev]` means the hub when nothing exists under that path.
 */
export function hubModelRef(model: string): RepoRef | null {
  if (model.startsWith('hf://')) return parseRepo(model);
  if (fs.existsSync(model) || model.endsWith('.gguf') || !/^[^/\\@]+\/[^/\\@]+(@.+)?$/.test(model)) return null;
  try {
    return parseRepo(model);
  } catch {
    return null;
  }
}

/** The repo's part of a hub URL: `org/name`, `datasets/org/name` or `spaces/org/name`. */
export function repoUrlPath(ref: RepoRef): string {
  return ref.type === 'model' ? ref.name : `${ref.type}s/${ref.name}`;
}

/** The repo's folder in the Hugging Face cache: `models--org--name` (as huggingface_hub names it). */
export function repoFolderName(ref: Pick<RepoRef, 'type' | 'name'>): string {
  return [`${ref.type}s`, ...ref.name.split('/')].join('--');
}

/** `org/name`, `org/name@rev`, with `datasets/`/`spaces/` for those kinds: for messages. */
export function describeRepo(ref: RepoRef, withRevision = ref.revision !== DEFAULT_REVISION): string {
  return `${ref.type === 'model' ? '' : `${ref.type}s/`}${ref.name}${withRevision ? `@${ref.revision}` : ''}`;
}
