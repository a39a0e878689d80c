/**
 * What bench/measure-pull.mjs serves: a checkpoint folder's files as a repo of the loopback hub the
 * tests use (test/helpers/hub-server.ts), so a pull is measured end to end over real HTTP.
 */
import fs from 'node:fs';
import path from 'node:path';

export { startHubServer } from '../test/helpers/hub-server';
export { writeSyntheticCheckpoint } from './synthetic';

/** The files of a checkpoint folder (not its subfolders), in memory: the loopback hub serves buffers. */
export function checkpointFolder(dir: string): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (const f of fs.readdirSync(dir)) if (fs.statSync(path.join(dir, f)).isFile()) files[f] = fs.readFileSync(path.join(dir, f));
  return files;
}
