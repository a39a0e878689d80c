/**
 * File names and hashes from a hub listing are untrusted (a mirror may be hostile): a name becomes a
 * path in the cache only when it is a plain relative POSIX path, and only inside the folder meant.
 */
import path from 'node:path';
import { PaliGemmaError } from '../errors';

/** Why `name` is not a safe repo-relative file name, or null when it is. */
export function unsafeNameReason(name: unknown): string | null {
  if (typeof name !== 'string' || name === '') return 'not a name';
  if (name.length > 1024) return 'longer than 1024 characters';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters (NUL above all) are what is refused
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'a control character (NUL, newline, ...)';
  if (name.includes('\\')) return 'a backslash';
  if (name.startsWith('/')) return 'an absolute path';
  if (/^[A-Za-z]:/.test(name) || (process.platform === 'win32' && name.includes(':'))) return 'a drive letter or stream name';
  const segments = name.split('/');
  if (segments.includes('..')) return 'a ".." segment';
  if (segments.some((s) => s === '' || s === '.')) return 'an empty or "." segment';
  return null;
}

/** `rel` (a checked repo name) under `base`; throws if the result would not lie inside `base`. */
export function joinInside(base: string, rel: string, what: string): string {
  const reason = unsafeNameReason(rel);
  const root = path.resolve(base);
  const full = path.resolve(root, ...rel.split('/'));
  if (reason || !full.startsWith(root + path.sep)) {
    throw new PaliGemmaError('ERR_INVALID_FILE', `${what}: refusing the file name ${JSON.stringify(rel)} (${reason ?? 'it leads out of the cache'})`);
  }
  return full;
}

const BLOB_NAME = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/**
 * A blob name (the file's ETag: a git SHA-1 or an LFS SHA-256), normalized as huggingface_hub does
 * (no W/ prefix, no quotes); null when it is not one of those hashes.
 */
export function blobName(etag: string | null | undefined): string | null {
  if (!etag) return null;
  const e = etag
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1')
    .toLowerCase();
  return BLOB_NAME.test(e) ? e : null;
}
