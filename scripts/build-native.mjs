#!/usr/bin/env node
// Builds the native addon (and the paligemma-native tool) with cmake-js over the pinned llama.cpp.
//
//   node scripts/build-native.mjs [--out DIR] [--debug] [--CDGGML_CUDA=ON ...]
//
// CMake options pass through as --CD<KEY>=<VALUE> (cmake-js syntax); PALIGEMMA_CMAKE_OPTIONS adds more
// from the environment (space separated), PALIGEMMA_GPU=cuda|vulkan|metal is a shorthand, and
// PALIGEMMA_PORTABLE=1 turns GGML_NATIVE off (for binaries that run on other x86-64 machines).
// Each configuration (cpu, cuda, ...) has its own CMake build folder so switching never rebuilds.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveLlamaSource } from './llama-source.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

const GPU_FLAGS = { cuda: 'GGML_CUDA', vulkan: 'GGML_VULKAN', metal: 'GGML_METAL' };

export function parseBuildArgs(argv, env = process.env) {
  const opts = { out: null, debug: false, defines: new Map(), variant: 'cpu' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') opts.out = argv[++i];
    else if (a === '--debug') opts.debug = true;
    else if (a.startsWith('--CD')) {
      const [k, ...v] = a.slice(4).split('=');
      opts.defines.set(k, v.join('='));
    } else throw new Error(`build-native: unknown argument '${a}' (expected --out DIR, --debug or --CD<KEY>=<VALUE>)`);
  }
  for (const tok of (env.PALIGEMMA_CMAKE_OPTIONS || '').split(/\s+/).filter(Boolean)) {
    const m = /^(?:--CD|-D)?([A-Za-z0-9_]+)=(.*)$/.exec(tok);
    if (!m) throw new Error(`PALIGEMMA_CMAKE_OPTIONS: cannot read '${tok}' (expected KEY=VALUE)`);
    opts.defines.set(m[1], m[2]);
  }
  if (env.PALIGEMMA_GPU && env.PALIGEMMA_GPU !== 'cpu') {
    const flag = GPU_FLAGS[env.PALIGEMMA_GPU];
    if (!flag) throw new Error(`PALIGEMMA_GPU='${env.PALIGEMMA_GPU}' is not one of cpu, ${Object.keys(GPU_FLAGS).join(', ')}`);
    opts.defines.set(flag, 'ON');
  }
  if (env.PALIGEMMA_PORTABLE === '1' && !opts.defines.has('GGML_NATIVE')) opts.defines.set('GGML_NATIVE', 'OFF');
  for (const [variant, flag] of Object.entries(GPU_FLAGS)) {
    if (/^(ON|1|TRUE|YES)$/i.test(opts.defines.get(flag) || '')) opts.variant = variant;
  }
  return opts;
}

export function buildNative(argv = [], env = process.env) {
  const opts = parseBuildArgs(argv, env);
  const llamaDir = resolveLlamaSource();
  const tag = opts.variant + (opts.defines.get('GGML_NATIVE') === 'OFF' ? '-portable' : '') + (opts.debug ? '-debug' : '');
  const buildDir = path.join(root, 'native-build', tag);
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const args = [cmakeJs, 'compile', '--directory', root, '--out', buildDir, '--parallel', String(os.availableParallelism?.() ?? os.cpus().length)];
  if (opts.debug) args.push('--debug');
  args.push(`--CDLLAMA_CPP_DIR=${llamaDir}`);
  for (const [k, v] of opts.defines) args.push(`--CD${k}=${v}`);
  process.stderr.write(`[build-native] ${opts.variant} build in ${path.relative(root, buildDir)} (llama.cpp: ${llamaDir})\n`);
  const res = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root, env });
  if (res.status !== 0) throw new Error(`cmake-js failed (exit ${res.status ?? res.signal}); see the output above`);

  const config = opts.debug ? 'Debug' : 'Release';
  const built = path.join(buildDir, config, 'paligemma.node');
  if (!fs.existsSync(built)) throw new Error(`build finished but ${built} is missing`);
  const outDir = opts.out ? path.resolve(opts.out) : path.join(root, 'build', opts.variant === 'cpu' ? config : `${config}-${opts.variant}`);
  fs.mkdirSync(outDir, { recursive: true });
  // Copy to a temporary name and rename: a running process may have the old file mapped.
  const dest = path.join(outDir, 'paligemma.node');
  fs.copyFileSync(built, `${dest}.tmp`);
  fs.renameSync(`${dest}.tmp`, dest);
  const tool = path.join(buildDir, 'bin', `paligemma-native${process.platform === 'win32' ? '.exe' : ''}`);
  process.stderr.write(`[build-native] addon: ${path.relative(root, dest)}\n`);
  if (fs.existsSync(tool)) process.stderr.write(`[build-native] tool:  ${path.relative(root, tool)}\n`);
  return { addon: dest, tool, buildDir, variant: opts.variant };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    buildNative(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(1);
  }
}
