/** Free disk space, checked before a download or a conversion starts rather than discovered halfway. */
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { formatSize } from './format';

export interface DiskNeed {
  dir: string;
  bytes: number;
  what: string;
}

function existingAncestor(dir: string): string {
  let d = path.resolve(dir);
  while (!fs.existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
}

/** Throws ERR_WRITE naming what needs how much where, when a file system has less free than the needs on it. */
export async function checkFreeSpace(needs: DiskNeed[]) {
  const byDevice = new Map<number, { dir: string; bytes: number; what: string[] }>();
  for (const n of needs) {
    if (n.bytes <= 0) continue;
    const dir = existingAncestor(n.dir);
    const dev = fs.statSync(dir).dev;
    const entry = byDevice.get(dev) ?? { dir, bytes: 0, what: [] };
    entry.bytes += n.bytes;
    entry.what.push(`${n.what} ${formatSize(n.bytes)}`);
    byDevice.set(dev, entry);
  }
  for (const { dir, bytes, what } of byDevice.values()) {
    const st = await fs.promises.statfs(dir).catch(() => null);
    if (!st) continue; // a file system that cannot say: let the writes find out
    const free = Number(st.bavail) * Number(st.bsize);
    if (bytes > free) {
      throw new PaliGemmaError(
        'ERR_WRITE',
        `not enough disk space in ${dir}: needs about ${formatSize(bytes)} (${what.join(', ')}), ${formatSize(free)} free; free some space or point HF_HOME / PALIGEMMA_CACHE elsewhere`,
      );
    }
  }
}
