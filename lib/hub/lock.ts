/**
 * One writer per blob: a lock file created exclusively, holding its owner's pid and host, its mtime
 * refreshed by the holder every few seconds (a heartbeat). A lock is waited for while its owner
 * looks alive; it is stale, and taken over, when
 *  - it has not been refreshed for a minute, whatever its host or pid (a process killed hard, on
 *    this machine or on another one sharing the disk, or a container that restarted with a new
 *    hostname);
 *  - its owner on this host has died, or has our own pid without this process holding the lock
 *    (a container restarted with the same pid, 1 say, as the one that died).
 * A stale lock is removed under a guard file (`<lock>.break`, created with 'wx'), and only if it is
 * still the very file judged stale, so of several waiters that find it stale at once only one
 * removes it, and only one creates the next ('wx' again).
 * (huggingface_hub locks with flock on `.locks/<repo>/<etag>.lock`, which Node cannot take, so ours
 * has its own name beside it and does not exclude a Python download of the same blob.)
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PaliGemmaError } from '../errors';

/** How often a holder refreshes its lock, and how long unrefreshed makes one stale. */
export const LOCK_HEARTBEAT_MS = 10_000;
export const LOCK_STALE_MS = 60_000;

/** The ids of the locks this process holds or is creating: one with our pid and another id is a dead process's. */
const held = new Set<string>();

/**
 * Whether the process that made something (a lock, a conversion folder) is alive, as far as one can
 * tell: on this host, by its pid (our own pid only if `ours` says this process is the one); on
 * another host (a shared disk), only until it has not been modified for `foreignStaleMs`.
 */
export function ownerAlive(o: { pid: number; sameHost: boolean; ours: boolean; ageMs: number; foreignStaleMs: number }): boolean {
  if (!o.sameHost) return o.ageMs < o.foreignStaleMs;
  if (o.pid === process.pid) return o.ours;
  try {
    process.kill(o.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, someone else's
  }
}

export interface LockOptions {
  /** Called once if the lock is held by another live process, with who holds it. */
  onWait?: (owner: string) => void;
  heartbeatMs?: number;
  staleMs?: number;
}

interface Seen {
  text: string;
  ino: bigint;
  mtimeMs: number;
}

/** The lock file as it is now; null if there is none. */
async function look(file: string): Promise<Seen | null> {
  const st = await fs.promises.stat(file, { bigint: true }).catch(() => null);
  if (!st) return null;
  const text = await fs.promises.readFile(file, 'utf8').catch(() => '');
  return { text, ino: st.ino, mtimeMs: Number(st.mtimeMs) };
}

/** Whether the lock `seen` is stale; if not, who holds it. */
function judge(seen: Seen, staleMs: number): { stale: true } | { stale: false; owner: string } {
  const age = Date.now() - seen.mtimeMs;
  if (age > staleMs) return { stale: true };
  // An empty file is one being written this instant (or long ago by a process that died then).
  if (!seen.text) return age > 10_000 ? { stale: true } : { stale: false, owner: 'a process writing the lock' };
  let owner: { pid?: unknown; host?: unknown; id?: unknown };
  try {
    owner = JSON.parse(seen.text) as typeof owner;
  } catch {
    return { stale: true };
  }
  if (typeof owner?.pid !== 'number' || typeof owner.host !== 'string') return { stale: true };
  const alive = ownerAlive({
    pid: owner.pid,
    sameHost: owner.host === os.hostname(),
    ours: typeof owner.id === 'string' && held.has(owner.id),
    ageMs: age,
    foreignStaleMs: staleMs,
  });
  return alive ? { stale: false, owner: `process ${owner.pid} on ${owner.host}` } : { stale: true };
}

/**
 * Removes the stale lock `seen`, if it is still the file there. Breakers go one at a time through a
 * guard file created exclusively beside the lock, so none can remove a lock another waiter has just
 * created in the stale one's place (renaming the lock aside and back left a moment without it, in
 * which a third waiter could take it while the second still held the one put back). False: another
 * waiter is breaking it this instant, try again shortly.
 */
async function breakLock(file: string, seen: Seen): Promise<boolean> {
  const guard = `${file}.break`;
  try {
    await fs.promises.writeFile(guard, String(process.pid), { flag: 'wx' });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST') {
      throw new PaliGemmaError('ERR_WRITE', `${file}: cannot take over this stale lock (${code} creating ${guard}); remove it by hand`, { cause: err });
    }
    // A breaker holds the guard for a few milliseconds; one left for seconds is a process that died then.
    const st = await fs.promises.stat(guard).catch(() => null);
    if (st && Date.now() - st.mtimeMs > 10_000) await fs.promises.rm(guard, { force: true });
    return false;
  }
  try {
    const now = await look(file);
    if (now && now.ino === seen.ino && now.text === seen.text) await fs.promises.rm(file, { force: true });
  } finally {
    await fs.promises.rm(guard, { force: true });
  }
  return true;
}

/** Runs `run` holding the lock at `file`; `wait` sleeps between tries (and rejects on abort). */
export async function withLock<T>(file: string, wait: (ms: number) => Promise<void>, run: () => Promise<T>, o: LockOptions = {}): Promise<T> {
  const staleMs = o.staleMs ?? LOCK_STALE_MS;
  const id = crypto.randomBytes(8).toString('hex');
  const content = JSON.stringify({ pid: process.pid, host: os.hostname(), id });
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  let told = false;
  // Registered before the file exists: another call of this process may read it before writeFile returns.
  held.add(id);
  try {
    for (;;) {
      try {
        await fs.promises.writeFile(file, content, { flag: 'wx' });
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const seen = await look(file);
      if (!seen) continue; // released meanwhile
      const verdict = judge(seen, staleMs);
      if (verdict.stale) {
        if (!(await breakLock(file, seen))) await wait(20);
        continue;
      }
      if (!told) {
        told = true;
        o.onWait?.(`${verdict.owner} (lock ${file})`);
      }
      await wait(200);
    }
  } catch (err) {
    held.delete(id);
    throw err;
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    fs.promises.utimes(file, now, now).catch(() => undefined);
  }, o.heartbeatMs ?? LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await run();
  } finally {
    clearInterval(heartbeat);
    held.delete(id);
    // Only ours: had this process stalled past the stale time, the lock may be another's by now.
    if ((await fs.promises.readFile(file, 'utf8').catch(() => '')) === content) await fs.promises.rm(file, { force: true });
  }
}
