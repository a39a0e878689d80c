#!/usr/bin/env node
// Builds the native addon (and the paligemma-native tool) with cmake-js over the pinned llama.cpp.
//
//   node scripts/build-native.mjs [--out DIR] [--portable | --native] [--debug] [--clean] [--CDGGML_CUDA=ON ...]
//
// --portable (the default, and what the package ships): llama.cpp as shared libraries and ggml's CPU
// backend once per CPU generation, the best loaded at run time; the addon folder holds them all.
// --native: one static binary tuned to this machine's CPU (GGML_NATIVE), what a source build at
// install time makes. PALIGEMMA_PORTABLE=0|1 chooses the same from the environment.
// CMake options pass through as --CD<KEY>=<VALUE> (cmake-js syntax); PALIGEMMA_CMAKE_OPTIONS adds more
// from the environment (space separated), PALIGEMMA_GPU=cuda|vulkan|metal is a shorthand.
// --clean removes the CMake folder and the llama.cpp source afterwards (an installed package keeps
// only the built addon). Each configuration has its own CMake folder, so switching never rebuilds.
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
  const opts = { out: null, debug: false, clean: false, portable: env.PALIGEMMA_PORTABLE !== '0', defines: new Map(), variant: 'cpu' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') opts.out = argv[++i];
    else if (a === '--debug') opts.debug = true;
    else if (a === '--portable') opts.portable = true;
    else if (a === '--native') opts.portable = false;
    else if (a === '--clean') opts.clean = true;
    else if (a.startsWith('--CD')) {
      const [k, ...v] = a.slice(4).split('=');
      opts.defines.set(k, v.join('='));
    } else throw new Error(`build-native: unknown argument '${a}' (expected --out DIR, --portable, --native, --debug, --clean or --CD<KEY>=<VALUE>)`);
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
  for (const [variant, flag] of Object.entries(GPU_FLAGS)) {
    if (/^(ON|1|TRUE|YES)$/i.test(opts.defines.get(flag) || '')) opts.variant = variant;
  }
  return opts;
}

/**
 * The files of a built addon: paligemma.node and, in a portable build, the libraries it loads, each
 * once under the name the loader asks for (libllama.so.0 is the link the addon names; the fully
 * versioned file behind it and the unversioned development link are not needed). Returns
 * [source path, name] pairs.
 */
export function addonFiles(dir) {
  const out = [];
  for (const name of fs.readdirSync(dir)) {
    const file = path.join(dir, name);
    const link = fs.lstatSync(file).isSymbolicLink();
    if (name === 'paligemma.node') out.push([file, name]);
    // libx.so.0 / libx.0.dylib: the name a library is linked under, usually a link to libx.so.0.25.1.
    else if (/\.so\.\d+$|\.\d+\.dylib$/.test(name)) out.push([link ? fs.realpathSync(file) : file, name]);
    // Unversioned: loadable modules such as libggml-cpu-haswell.so (a link here is a development name).
    else if (/\.(so|dylib|dll)$/.test(name) && !link) out.push([file, name]);
  }
  return out;
}

export function buildNative(argv = [], env = process.env) {
  const opts = parseBuildArgs(argv, env);
  const llamaDir = resolveLlamaSource();
  const tag = opts.variant + (opts.portable ? '-portable' : '') + (opts.debug ? '-debug' : '');
  const buildDir = path.join(root, 'native-build', tag);
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const args = [cmakeJs, 'compile', '--directory', root, '--out', buildDir, '--parallel', String(os.availableParallelism?.() ?? os.cpus().length)];
  if (opts.debug) args.push('--debug');
  args.push(`--CDLLAMA_CPP_DIR=${llamaDir}`, `--CDPG_PORTABLE=${opts.portable ? 'ON' : 'OFF'}`);
  for (const [k, v] of opts.defines) args.push(`--CD${k}=${v}`);
  process.stderr.write(
    `[build-native] ${opts.variant}${opts.portable ? ' portable (every CPU variant)' : ' native (this CPU)'} build in ${path.relative(root, buildDir)} (llama.cpp: ${llamaDir})\n`,
  );
  const res = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root, env });
  if (res.status !== 0) throw new Error(`cmake-js failed (exit ${res.status ?? res.signal}); see the output above`);

  const config = opts.debug ? 'Debug' : 'Release';
  const builtDir = opts.portable ? path.join(buildDir, 'bin') : path.join(buildDir, config);
  if (!fs.existsSync(path.join(builtDir, 'paligemma.node'))) throw new Error(`build finished but ${path.join(builtDir, 'paligemma.node')} is missing`);
  const outDir = opts.out ? path.resolve(opts.out) : path.join(root, 'build', opts.variant === 'cpu' ? config : `${config}-${opts.variant}`);
  fs.mkdirSync(outDir, { recursive: true });
  // Libraries of an earlier build (another configuration's variants) must not be loaded with these.
  for (const f of fs.readdirSync(outDir)) if (/\.(so|dylib|dll)(\.[\d.]+)?$/.test(f)) fs.rmSync(path.join(outDir, f));
  // Copy to a temporary name and rename: a running process may have the old file mapped.
  const files = addonFiles(builtDir);
  for (const [src, name] of files) {
    const dest = path.join(outDir, name);
    fs.copyFileSync(src, `${dest}.tmp`);
    fs.renameSync(`${dest}.tmp`, dest);
  }
  const addon = path.join(outDir, 'paligemma.node');
  const tool = path.join(opts.portable ? builtDir : path.join(buildDir, 'bin'), `paligemma-native${process.platform === 'win32' ? '.exe' : ''}`);
  process.stderr.write(`[build-native] addon: ${path.relative(root, addon)}${files.length > 1 ? ` and ${files.length - 1} libraries beside it` : ''}\n`);
  if (fs.existsSync(tool)) process.stderr.write(`[build-native] tool:  ${path.relative(root, tool)}\n`);
  if (opts.clean) {
    fs.rmSync(buildDir, { recursive: true, force: true });
    if (!fs.readdirSync(path.dirname(buildDir)).length) fs.rmSync(path.dirname(buildDir), { recursive: true });
    if (!env.LLAMA_CPP_DIR) fs.rmSync(path.join(root, 'deps'), { recursive: true, force: true });
    process.stderr.write('[build-native] removed the CMake folder and the llama.cpp source\n');
  }
  return { addon, files: files.map(([, name]) => path.join(outDir, name)), tool, buildDir, variant: opts.variant, portable: opts.portable };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    buildNative(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(1);
  }
}
