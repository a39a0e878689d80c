#!/usr/bin/env node
// Produces prebuilt binaries under prebuilds/.
//   node scripts/prebuildify.mjs            CPU: `prebuildify --napi --strip` -> prebuilds/<platform>-<arch>/
//   node scripts/prebuildify.mjs --gpu cuda GPU variant -> prebuilds/<platform>-<arch>-cuda/ (our loader's folder)
// Prebuilt CPU binaries are portable (GGML_NATIVE=OFF: AVX2/FMA/F16C baseline on x86-64), unlike local
// source builds, which tune for the building machine. PALIGEMMA_PORTABLE=0 reuses the local tuned build
// (used by the packaging test, to check the mechanism without a second llama.cpp build).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildNative } from './build-native.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const args = process.argv.slice(2);
const gpuAt = args.indexOf('--gpu');
const gpu = gpuAt >= 0 ? args[gpuAt + 1] : null;

try {
  if (gpu) {
    const outDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}-${gpu}`);
    const { addon } = buildNative(['--out', outDir], { ...process.env, PALIGEMMA_GPU: gpu, PALIGEMMA_PORTABLE: '1' });
    if (process.platform !== 'win32') execFileSync('strip', ['--strip-unneeded', addon], { stdio: 'inherit' });
    console.error(`[prebuildify] ${path.relative(root, addon)}`);
  } else {
    const bin = require.resolve('prebuildify/bin.js');
    // node-gyp only needs Node's headers to configure (binding.gyp compiles nothing itself): use the
    // running Node's own headers when they are installed, instead of downloading some other version's.
    const env = { PALIGEMMA_PORTABLE: '1', ...process.env };
    const prefix = path.resolve(path.dirname(process.execPath), '..');
    if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node.h'))) env.npm_config_nodedir = prefix;
    const res = spawnSync(process.execPath, [bin, '--napi', '--strip', '--target', process.versions.node], { stdio: 'inherit', cwd: root, env });
    if (res.status !== 0) process.exit(res.status ?? 1);
    const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
    // prebuildify moves the binary out of build/Release (after `node-gyp rebuild` emptied build/):
    // put a copy back so the local checkout keeps a loadable addon.
    const made = fs.readdirSync(dir).find((f) => f.endsWith('.node'));
    if (made) {
      fs.mkdirSync(path.join(root, 'build', 'Release'), { recursive: true });
      fs.copyFileSync(path.join(dir, made), path.join(root, 'build', 'Release', 'paligemma.node'));
    }
    console.error(
      `[prebuildify] ${fs
        .readdirSync(dir)
        .map((f) => path.join('prebuilds', path.basename(dir), f))
        .join(', ')}`,
    );
  }
} catch (err) {
  console.error(`error: ${err.message}`);
  process.exit(1);
}
