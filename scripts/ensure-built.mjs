#!/usr/bin/env node
// `npm test` pre-step: compile TypeScript, bring the native build up to date (incremental, so a
// no-change run costs seconds) and write the selftest model.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
for (const script of ['build-ts.mjs', 'build-native.mjs', 'make-selftest.mjs']) {
  const res = spawnSync(process.execPath, [path.join(root, 'scripts', script)], { stdio: 'inherit', cwd: root });
  if (res.status !== 0) process.exit(res.status ?? 1);
}
