#!/usr/bin/env node
// Builds llama.cpp's own tools (llama-bench and llama-mtmd-cli by default) from the same pinned
// source, for side-by-side comparisons. Output: native-build/llama-tools/bin/.
//   node scripts/build-llama-tools.mjs [target ...] [-DKEY=VALUE ...] [--out DIR]
// --out builds into another folder (e.g. a second build for an older instruction set:
// --out native-build/llama-tools-avx2 -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON).
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveLlamaSource } from './llama-source.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const outDir = outAt >= 0 ? args.splice(outAt, 2)[1] : undefined;
if (outAt >= 0 && !outDir) {
  console.error('error: --out needs a folder');
  process.exit(2);
}
const targets = args.filter((a) => !a.startsWith('-D'));
const defines = args.filter((a) => a.startsWith('-D'));
const buildDir = outDir ? path.resolve(outDir) : path.join(root, 'native-build', 'llama-tools');

function run(cmd, argv) {
  const res = spawnSync(cmd, argv, { stdio: 'inherit' });
  if (res.status !== 0) {
    console.error(`error: ${cmd} ${argv.join(' ')} failed`);
    process.exit(res.status ?? 1);
  }
}

const src = resolveLlamaSource();
run('cmake', [
  '-S',
  src,
  '-B',
  buildDir,
  '-DCMAKE_BUILD_TYPE=Release',
  '-DBUILD_SHARED_LIBS=OFF',
  '-DLLAMA_CURL=OFF',
  '-DLLAMA_OPENSSL=OFF',
  '-DLLAMA_BUILD_TESTS=OFF',
  '-DLLAMA_BUILD_EXAMPLES=OFF',
  '-DLLAMA_BUILD_SERVER=OFF',
  '-DLLAMA_BUILD_TOOLS=ON',
  ...defines,
]);
run('cmake', [
  '--build',
  buildDir,
  '--parallel',
  String(os.availableParallelism?.() ?? os.cpus().length),
  '--target',
  ...(targets.length ? targets : ['llama-bench', 'llama-mtmd-cli']),
]);
console.error(`[llama-tools] built in ${path.relative(root, path.join(buildDir, 'bin'))}`);
