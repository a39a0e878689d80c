/**
 * One writer per blob: a lock file created exclusively, holding its owner's pid and host. A lock whose
 * owner (on this host) has died is taken over; one held by a live process is waited for.
 * (huggingface_hub locks with flock on `.locks/<repo>/<etag>.lock`, which Node cannot take, so ours
 * has its own name beside it and does not exclude a Python download of the same blob.)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function ownerAlive(text: string): boolean {
  try {
    const { pid, host } = JSON.parse(text) as { pid?: unknown; host?: unknown };
    if (host !== os.hostname() || typeof pid !== 'number') return true; // another machine's (a shared disk): assume alive
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, someone else's
  }
}

/** Runs `run` holding the lock at `file`; `wait` sleeps between tries (and rejects on abort). */
export async function withLock<T>(file: string, wait: (ms: number) => Promise<void>, run: () => Promise<T>): Promise<T> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  for (;;) {
    try {
      await fs.promises.writeFile(file, JSON.stringify({ pid: process.pid, host: os.hostname() }), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const text = await fs.promises.readFile(file, 'utf8').catch(() => '');
      // An empty file is one being written this instant (or long ago by a process that died then).
      const age = Date.now() - ((await fs.promises.stat(file).catch(() => null))?.mtimeMs ?? 0);
      if (text ? !ownerAlive(text) : age > 10_000) await fs.promises.rm(file, { force: true });
      else await wait(200);
    }
  }
  try {
    return await run();
  } finally {
    await fs.promises.rm(file, { force: true });
  }
}
