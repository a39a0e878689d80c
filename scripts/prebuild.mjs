#!/usr/bin/env node
// Makes the prebuilt binary that the npm package ships, in prebuilds/<platform>-<arch>[-<gpu>]/.
//   node scripts/prebuild.mjs              CPU: the portable build (every CPU variant, chosen at load)
//   node scripts/prebuild.mjs --gpu cuda   a GPU variant, in its own folder (see lib/native/binding.ts)
// The addon is paligemma.napi.node for the CPU folder (the name node-gyp-build looks for) and
// paligemma.node for a GPU folder, with the libraries it loads beside it, stripped of symbols.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildNative } from './build-native.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const gpuAt = args.indexOf('--gpu');
const gpu = gpuAt >= 0 ? args[gpuAt + 1] : null;
if (args.length !== (gpu ? 2 : 0)) {
  console.error('usage: node scripts/prebuild.mjs [--gpu cuda|vulkan|metal]');
  process.exit(2);
}

try {
  const env = { ...process.env, PALIGEMMA_PORTABLE: '1', ...(gpu ? { PALIGEMMA_GPU: gpu } : {}) };
  const { files } = buildNative([], env);
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}${gpu ? `-${gpu}` : ''}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  let bytes = 0;
  for (const file of files) {
    const name = path.basename(file) === 'paligemma.node' && !gpu ? 'paligemma.napi.node' : path.basename(file);
    const dest = path.join(dir, name);
    fs.copyFileSync(file, dest);
    if (process.platform === 'linux') execFileSync('strip', ['--strip-unneeded', dest], { stdio: 'inherit' });
    else if (process.platform === 'darwin') execFileSync('strip', ['-x', dest], { stdio: 'inherit' });
    bytes += fs.statSync(dest).size;
  }
  console.error(`[prebuild] ${path.relative(root, dir)}: ${files.length} files, ${(bytes / 1048576).toFixed(1)} MiB`);
} catch (err) {
  console.error(`error: ${err.message}`);
  process.exit(1);
}
