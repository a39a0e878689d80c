#!/usr/bin/env node
// npm install hook: use a prebuilt binary when one loads, compile from source only when none does.
// PALIGEMMA_BUILD_FROM_SOURCE=1 forces a source build; PALIGEMMA_SKIP_BUILD=1 skips it (not recommended).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function binaryLoads() {
  // In a child process: a binary that crashes on load must not fail the install itself.
  const code = `require('node-gyp-build')(${JSON.stringify(root)})`;
  const res = spawnSync(process.execPath, ['-e', code], { stdio: 'ignore', cwd: root, env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' } });
  return res.status === 0;
}

if (process.env.PALIGEMMA_SKIP_BUILD === '1') {
  console.error('[paligemma-node] PALIGEMMA_SKIP_BUILD=1: not building the native addon');
} else if (process.env.PALIGEMMA_BUILD_FROM_SOURCE !== '1' && binaryLoads()) {
  console.error('[paligemma-node] using the prebuilt native addon');
} else {
  console.error('[paligemma-node] no prebuilt binary loads here: building from source (cmake + C++ compiler, a few minutes)');
  const res = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs')], { stdio: 'inherit', cwd: root });
  process.exit(res.status ?? 1);
}
