/**
 * The Hugging Face cache as huggingface_hub lays it out, read and written the same way so that Python
 * and this package share their downloads:
 *   <hubCache>/models--org--name/blobs/<etag>                 the files' bytes, named by their hash
 *                               /snapshots/<commit>/<file>    -> ../../blobs/<etag> (relative links)
 *                               /refs/<revision>              the commit a branch or tag pointed to
 */
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { uniqueSuffix } from '../gguf/write';
import { joinInside } from './names';
import { COMMIT_HASH, type RepoRef, repoFolderName } from './repo';

export function repoDir(hubCache: string, ref: Pick<RepoRef, 'type' | 'name'>): string {
  return path.join(hubCache, repoFolderName(ref));
}

export function snapshotDir(hubCache: string, ref: RepoRef, commit: string): string {
  return path.join(repoDir(hubCache, ref), 'snapshots', commit);
}

export function blobPath(hubCache: string, ref: RepoRef, etag: string): string {
  return path.join(repoDir(hubCache, ref), 'blobs', etag);
}

/** The commit `refs/<revision>` records, if any (and if it is one: the file is not trusted blindly). */
export function readRef(hubCache: string, ref: RepoRef): string | null {
  if (COMMIT_HASH.test(ref.revision)) return ref.revision;
  try {
    const commit = fs.readFileSync(joinInside(path.join(repoDir(hubCache, ref), 'refs'), ref.revision, ref.name), 'utf8').trim();
    return COMMIT_HASH.test(commit) ? commit : null;
  } catch {
    return null;
  }
}

/** Records `revision -> commit`, atomically (huggingface_hub writes the bare hash, no newline). */
export async function writeRef(hubCache: string, ref: RepoRef, commit: string) {
  if (COMMIT_HASH.test(ref.revision)) return;
  const file = joinInside(path.join(repoDir(hubCache, ref), 'refs'), ref.revision, ref.name);
  // A name of its own: two pulls of the repo in one process (other types, say) may write it at once.
  const tmp = `${file}.${uniqueSuffix()}.tmp`;
  try {
    await fs.promises.mkdir(path.dirname(file), { recursive: true });
    await fs.promises.writeFile(tmp, commit);
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw new PaliGemmaError(
      'ERR_WRITE',
      `${file}: cannot record the commit of ${ref.revision} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      {
        cause: err,
      },
    );
  }
}

/**
 * Points `snapshots/<commit>/<file>` at its blob with a relative link (so the cache can move), as
 * huggingface_hub does; where links cannot be made (Windows without the privilege), a copy.
 */
export async function linkSnapshotFile(hubCache: string, ref: RepoRef, commit: string, file: string, etag: string) {
  const dest = joinInside(snapshotDir(hubCache, ref, commit), file, ref.name);
  const blob = blobPath(hubCache, ref, etag);
  // Already linked (by us or by Python): leave it.
  const current = await fs.promises.readlink(dest).catch(() => null);
  if (current !== null && path.resolve(path.dirname(dest), current) === blob) return;
  await fs.promises.mkdir(path.dirname(dest), { recursive: true });
  await fs.promises.rm(dest, { force: true });
  try {
    await fs.promises.symlink(path.relative(path.dirname(dest), blob), dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM')
      throw new PaliGemmaError('ERR_WRITE', `${dest}: cannot link to its blob (${(err as NodeJS.ErrnoException).code})`);
    await fs.promises.copyFile(blob, dest);
  }
}

/** The file a snapshot holds, if it is there and its blob is too (a link whose blob is gone is not). */
export function snapshotFile(hubCache: string, ref: RepoRef, commit: string, file: string): string | null {
  const p = joinInside(snapshotDir(hubCache, ref, commit), file, ref.name);
  try {
    return fs.statSync(p).isFile() ? p : null;
  } catch {
    return null;
  }
}
